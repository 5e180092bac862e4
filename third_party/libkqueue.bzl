"""libkqueue (a user-space kqueue for Linux), built from a source tree named at build time.

Only the libkqueue configuration uses it (`tools/bazel test --config=libkqueue //...`, see
.bazelrc): the kqueue poller backend then runs on Linux. GEV_LIBKQUEUE_SRC names the source tree,
absolute or relative to this workspace (CI: ../shared/third_party/libkqueue). The rule builds it
with CMake into the repository's own directory; without the variable the repository holds a
target that fails with that advice, so a plain build never needs the sources.
"""

def _libkqueue_repository_impl(ctx):
    source = ctx.os.environ.get("GEV_LIBKQUEUE_SRC", "")
    if not source:
        ctx.file("BUILD.bazel", """
genrule(
    name = "missing",
    outs = ["missing.cc"],
    cmd = "echo 'set GEV_LIBKQUEUE_SRC to a libkqueue source tree (or use --config=libkqueue)' >&2; exit 1",
)

cc_library(
    name = "libkqueue",
    srcs = [":missing"],
    visibility = ["//visibility:public"],
)
""")
        return
    if not source.startswith("/"):
        source = str(ctx.path(Label("@//:WORKSPACE")).dirname) + "/" + source
    cmake = ctx.which("cmake")
    if cmake == None:
        fail("libkqueue: cmake is needed (apt-get install cmake)")
    prefix = str(ctx.path("prefix"))
    steps = [
        [cmake, "-S", source, "-B", "build", "-DCMAKE_INSTALL_PREFIX=" + prefix,
         "-DCMAKE_INSTALL_LIBDIR=lib", "-DCMAKE_BUILD_TYPE=RelWithDebInfo"],
        [cmake, "--build", "build", "-j2"],
        [cmake, "--install", "build"],
    ]
    for step in steps:
        result = ctx.execute(step, quiet = True)
        if result.return_code != 0:
            fail("libkqueue: %s failed:\n%s\n%s" % (" ".join([str(s) for s in step]),
                                                  result.stdout, result.stderr))
    ctx.file("BUILD.bazel", """
cc_library(
    name = "libkqueue",
    srcs = ["prefix/lib/libkqueue.a"],
    hdrs = ["prefix/include/kqueue/sys/event.h"],
    includes = ["prefix/include/kqueue"],
    linkopts = ["-lpthread"],
    visibility = ["//visibility:public"],
)
""")

libkqueue_repository = repository_rule(
    implementation = _libkqueue_repository_impl,
    environ = ["GEV_LIBKQUEUE_SRC"],
    local = True,
)
