"""gev_dependencies(): what a workspace that depends on @gev adds to its WORKSPACE.

    local_repository(name = "gev", path = "/path/to/gev")
    load("@gev//:deps.bzl", "gev_dependencies")
    gev_dependencies()

Defines, unless the workspace has already defined them (with pinned upstream http_archives,
say): the offline stand-ins for Bazel 4.2.3's implicit @rules_cc, @rules_java and
@remote_coverage_tools (third_party/bazel_offline), and @com_google_absl,
@com_google_googletest, @com_github_google_benchmark, @openssl (for @gev//tls and
@gev//websocket) and @zlib (for @gev//websocket) from Debian's packages
(third_party/system_libs.bzl).
"""

load(
    "//third_party:system_libs.bzl",
    "system_absl",
    "system_benchmark",
    "system_googletest",
    "system_openssl",
    "system_zlib",
)

def _offline_standin_impl(ctx):
    # The stand-in's files, linked in place (as local_repository would) from this repository.
    anchor = ctx.path(Label("//third_party/bazel_offline:README.md"))
    source = anchor.dirname.get_child(ctx.attr.directory)
    for child in source.readdir():
        ctx.symlink(child, child.basename)

_offline_standin = repository_rule(
    implementation = _offline_standin_impl,
    attrs = {"directory": attr.string(mandatory = True)},
    local = True,
)

def gev_dependencies():
    """Defines the repositories @gev's targets need that the workspace has not defined."""
    for name in ["rules_cc", "rules_java", "remote_coverage_tools"]:
        if not native.existing_rule(name):
            _offline_standin(name = name, directory = name)
    if not native.existing_rule("com_google_absl"):
        system_absl(name = "com_google_absl")
    if not native.existing_rule("com_google_googletest"):
        system_googletest(name = "com_google_googletest")
    if not native.existing_rule("com_github_google_benchmark"):
        system_benchmark(name = "com_github_google_benchmark")
    if not native.existing_rule("openssl"):
        system_openssl(name = "openssl")
    if not native.existing_rule("zlib"):
        system_zlib(name = "zlib")
