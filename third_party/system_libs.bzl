"""Exposes Debian's prebuilt abseil, GoogleTest, Google Benchmark, OpenSSL and zlib under upstream labels.

Each repository is generated from the installed package: one `cc_library` per upstream label,
carrying the link flags that the package's pkg-config file lists. Headers live in /usr/include,
which the compiler searches already, so no header is copied or declared. Code written against
`@com_google_absl//absl/strings` and friends therefore builds unchanged whether the WORKSPACE
points at these system repositories or at pinned upstream `http_archive`s.
"""

_APT_HINT = ("missing {what}: install it with\n" +
             "  apt-get install -y bazel-bootstrap g++ pkg-config libabsl-dev libgtest-dev " +
             "libgmock-dev libbenchmark-dev\n" +
             "or run tools/bazel, which does so when run as root.")

def _pkg_config_libs(ctx, modules):
    result = ctx.execute(["pkg-config", "--libs"] + modules)
    if result.return_code != 0:
        fail(_APT_HINT.format(what = "pkg-config module(s) " + " ".join(modules) +
                                    " (" + result.stderr.strip() + ")"))
    return [flag for flag in result.stdout.strip().split(" ") if flag]

def _library(name, linkopts, deps = []):
    return """cc_library(
    name = "{name}",
    linkopts = {linkopts},
    deps = {deps},
)
""".format(name = name, linkopts = repr(linkopts), deps = repr(deps))

def _write_packages(ctx, packages):
    """packages: {package_dir: {target: [pkg-config modules] or ("raw", [linkopts])}}."""
    for package_dir, targets in packages.items():
        content = ['package(default_visibility = ["//visibility:public"])\n']
        for target, spec in targets.items():
            if type(spec) == "tuple":
                linkopts = spec[1]
            elif spec:
                linkopts = _pkg_config_libs(ctx, spec)
            else:
                linkopts = []
            content.append(_library(target, linkopts))
        path = package_dir + "/BUILD.bazel" if package_dir else "BUILD.bazel"
        ctx.file(path, "\n".join(content))

def _require_header(ctx, header):
    if not ctx.path(header).exists:
        fail(_APT_HINT.format(what = header))

# Upstream label -> pkg-config module(s), for the abseil pieces that exist in 20220623.
_ABSL_PACKAGES = {
    "absl/base": {
        "base": ["absl_base"],
        "core_headers": [],
        "config": [],
    },
    "absl/algorithm": {"container": []},
    "absl/cleanup": {"cleanup": []},
    "absl/container": {
        "flat_hash_map": ["absl_flat_hash_map"],
        "flat_hash_set": ["absl_flat_hash_set"],
        "inlined_vector": ["absl_inlined_vector"],
        "fixed_array": ["absl_fixed_array"],
    },
    "absl/flags": {
        "flag": ["absl_flags"],
        "parse": ["absl_flags_parse"],
        "usage": ["absl_flags_usage"],
    },
    "absl/functional": {
        "any_invocable": ["absl_any_invocable"],
        "bind_front": ["absl_bind_front"],
        "function_ref": ["absl_function_ref"],
    },
    "absl/hash": {"hash": ["absl_hash"]},
    "absl/memory": {"memory": []},
    "absl/numeric": {"bits": [], "int128": ["absl_int128"]},
    "absl/random": {"random": ["absl_random_random"]},
    "absl/status": {
        "status": ["absl_status"],
        "statusor": ["absl_statusor"],
    },
    "absl/strings": {
        "strings": ["absl_strings"],
        "str_format": ["absl_str_format"],
        "cord": ["absl_cord"],
    },
    "absl/synchronization": {"synchronization": ["absl_synchronization"]},
    "absl/time": {"time": ["absl_time"]},
    "absl/types": {
        "optional": ["absl_optional"],
        "span": ["absl_span"],
        "variant": ["absl_variant"],
    },
    "absl/utility": {"utility": []},
}

def _system_absl_impl(ctx):
    _require_header(ctx, "/usr/include/absl/base/config.h")
    ctx.file("WORKSPACE", 'workspace(name = "{}")\n'.format(ctx.name))
    _write_packages(ctx, _ABSL_PACKAGES)

system_absl = repository_rule(
    implementation = _system_absl_impl,
    local = True,
    doc = "Debian's libabsl-dev under @com_google_absl's labels.",
)

def _system_googletest_impl(ctx):
    _require_header(ctx, "/usr/include/gtest/gtest.h")
    _require_header(ctx, "/usr/include/gmock/gmock.h")
    ctx.file("WORKSPACE", 'workspace(name = "{}")\n'.format(ctx.name))
    _write_packages(ctx, {"": {
        "gtest": ["gtest"],
        "gtest_main": ["gtest_main"],
        "gmock": ["gmock"],
        "gmock_main": ["gmock_main"],
    }})

system_googletest = repository_rule(
    implementation = _system_googletest_impl,
    local = True,
    doc = "Debian's libgtest-dev and libgmock-dev under @com_google_googletest's labels.",
)

def _system_benchmark_impl(ctx):
    _require_header(ctx, "/usr/include/benchmark/benchmark.h")
    ctx.file("WORKSPACE", 'workspace(name = "{}")\n'.format(ctx.name))
    libs = _pkg_config_libs(ctx, ["benchmark"])
    _write_packages(ctx, {"": {
        "benchmark": ("raw", libs),
        # Debian ships benchmark_main as a static archive without a pkg-config file.
        "benchmark_main": ("raw", ["-lbenchmark_main"] + libs),
    }})

system_benchmark = repository_rule(
    implementation = _system_benchmark_impl,
    local = True,
    doc = "Debian's libbenchmark-dev under @com_github_google_benchmark's labels.",
)

def _system_openssl_impl(ctx):
    if not ctx.path("/usr/include/openssl/ssl.h").exists:
        fail(("missing /usr/include/openssl/ssl.h (OpenSSL 3, for //tls only): install it with\n" +
              "  apt-get install -y libssl-dev\n" +
              "or run tools/bazel, which does so when run as root."))
    ctx.file("WORKSPACE", 'workspace(name = "{}")\n'.format(ctx.name))
    crypto = _pkg_config_libs(ctx, ["libcrypto"])
    ssl = _pkg_config_libs(ctx, ["libssl"])
    ctx.file("BUILD.bazel", "\n".join([
        'package(default_visibility = ["//visibility:public"])\n',
        _library("crypto", crypto),
        _library("ssl", ssl, deps = [":crypto"]),
    ]))

system_openssl = repository_rule(
    implementation = _system_openssl_impl,
    local = True,
    doc = ("Debian's libssl-dev (OpenSSL 3) under the labels of the Bazel Central Registry's " +
           "`openssl` module: @openssl//:ssl and @openssl//:crypto. Only //tls depends on it."),
)

def _system_zlib_impl(ctx):
    if not ctx.path("/usr/include/zlib.h").exists:
        fail(("missing /usr/include/zlib.h (zlib, for //websocket's permessage-deflate): " +
              "install it with\n  apt-get install -y zlib1g-dev\n" +
              "or run tools/bazel, which does so when run as root."))
    ctx.file("WORKSPACE", 'workspace(name = "{}")\n'.format(ctx.name))
    ctx.file("BUILD.bazel", "\n".join([
        'package(default_visibility = ["//visibility:public"])\n',
        _library("zlib", _pkg_config_libs(ctx, ["zlib"])),
    ]))

system_zlib = repository_rule(
    implementation = _system_zlib_impl,
    local = True,
    doc = ("Debian's zlib1g-dev under the label of the Bazel Central Registry's `zlib` module: " +
           "@zlib//:zlib. Only //websocket (permessage-deflate) depends on it."),
)
