// swift-tools-version:6.0
import PackageDescription

// C libraries come from Debian's -dev packages (see the Makefile's `deps` target);
// no package outside the Swift toolchain is fetched.
let package = Package(
    name: "mg-run",
    products: [
        .executable(name: "mg-run", targets: ["mg-run"]),
    ],
    targets: [
        .systemLibrary(name: "CYAML", pkgConfig: "yaml-0.1", providers: [.apt(["libyaml-dev"])]),
        .systemLibrary(name: "CSeccomp", pkgConfig: "libseccomp", providers: [.apt(["libseccomp-dev"])]),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "CMicroHTTPD", pkgConfig: "libmicrohttpd", providers: [.apt(["libmicrohttpd-dev"])]),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .target(name: "CShim"),

        .target(name: "MGLog"),
        .target(name: "MGPolicy", dependencies: ["CYAML"]),
        .target(name: "MGGovernor", dependencies: ["MGPolicy"]),
        .target(name: "MGLedger", dependencies: ["MGGovernor", "MGPolicy", "MGLog", "CSQLite"]),
        .target(name: "MGProxy", dependencies: ["MGGovernor", "MGPolicy", "MGLog", "CCurl", "CMicroHTTPD"]),
        .target(name: "MGSupervisor", dependencies: ["MGProxy", "MGGovernor", "MGLedger", "MGPolicy", "MGLog", "CShim", "CSeccomp"]),
        .executableTarget(name: "mg-run", dependencies: ["MGSupervisor"]),

        .testTarget(name: "MGPolicyTests", dependencies: ["MGPolicy"]),
        .testTarget(name: "MGGovernorTests", dependencies: ["MGGovernor", "MGPolicy"]),
        .testTarget(name: "MGLedgerTests", dependencies: ["MGLedger", "MGGovernor", "MGPolicy"]),
        .testTarget(name: "MGProxyTests", dependencies: ["MGProxy", "MGGovernor"]),
    ]
)
