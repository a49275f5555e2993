//! Lets the binary link libseccomp (the OCI runtime compiles `linux.seccomp` profiles
//! with it) on a machine that has only the library itself: Debian's libseccomp2, which
//! every system with systemd carries, ships `libseccomp.so.2`, while the `libseccomp.so`
//! name the linker looks for comes only with libseccomp-dev. Where neither the link name
//! nor `LIBSECCOMP_LIB_PATH` is there, a link name pointing at the library is made in
//! OUT_DIR and added to the search path; where nothing is there, the linker says what
//! is missing.

use std::path::{Path, PathBuf};

const LIB_DIRS: [&str; 6] = [
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/lib64",
    "/usr/lib",
    "/lib",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LIBSECCOMP_LIB_PATH");
    if std::env::var_os("LIBSECCOMP_LIB_PATH").is_some() {
        return;
    }
    let has = |name: &str| LIB_DIRS.iter().any(|d| Path::new(d).join(name).exists());
    if has("libseccomp.so") || has("libseccomp.a") {
        return;
    }
    let Some(lib) = LIB_DIRS
        .iter()
        .map(|d| Path::new(d).join("libseccomp.so.2"))
        .find(|p| p.exists())
    else {
        return;
    };
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let link = out.join("libseccomp.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&lib, &link).expect("a link name in OUT_DIR");
    println!("cargo:rustc-link-search=native={}", out.display());
}
