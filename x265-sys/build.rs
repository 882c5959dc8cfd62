//! Build script of `nvencode-x265-sys`: finds libx265 with pkg-config, generates the bindings of
//! the `x265.h` it ships with, and declares the versioned entry point the header names only
//! through a macro.
//!
//! `x265.h` exports `x265_api_get` as `x265_api_get_<X265_BUILD>` (a token-pasting macro that
//! bindgen cannot expand), so this script reads `X265_BUILD` from the generated bindings and
//! writes the `extern` declaration with that link name. Every other entry point is reached
//! through the returned `x265_api` table, which is the header's recommended way and survives
//! libx265 builds with other bit depths. No header text or generated binding is kept in the
//! repository.
//!
//! With `DOCS_RS` set (docs.rs: no header, no libclang) nothing is generated and the crate
//! compiles its front page only.

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=DOCS_RS");
    println!("cargo:rustc-check-cfg=cfg(x265_sys_docs_only)");
    if env::var_os("DOCS_RS").is_some() {
        println!("cargo:rustc-cfg=x265_sys_docs_only");
        return;
    }
    let lib = match pkg_config::Config::new()
        .atleast_version("3.0")
        .probe("x265")
    {
        Ok(lib) => lib,
        Err(e) => {
            // A build script's only way to report is to fail the build; the message says what to
            // install.
            eprintln!(
                "nvencode-x265-sys: libx265 (>= 3.0) not found through pkg-config: {e}\n\
                 install it (Debian/Ubuntu: `apt-get install libx265-dev pkg-config`), or build \
                 nvencode without its `x265` feature"
            );
            std::process::exit(1);
        }
    };
    let mut builder = bindgen::Builder::default()
        .header_contents("wrapper.h", "#include <x265.h>\n")
        .allowlist_function("x265_.*")
        .allowlist_type("x265_.*")
        // Enums the header names in capitals (`X265_RC_METHODS`, ...).
        .allowlist_type("X265_.*")
        .allowlist_var("X265_.*")
        .default_enum_style(bindgen::EnumVariation::Consts)
        .derive_debug(true)
        .derive_default(true)
        .layout_tests(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for path in &lib.include_paths {
        builder = builder.clang_arg(format!("-I{}", path.display()));
    }
    let bindings = match builder.generate() {
        Ok(b) => b.to_string(),
        Err(e) => {
            eprintln!("nvencode-x265-sys: bindgen failed on x265.h: {e}");
            std::process::exit(1);
        }
    };
    let Some(build) = x265_build(&bindings) else {
        eprintln!("nvencode-x265-sys: X265_BUILD not found in the bindings of x265.h");
        std::process::exit(1);
    };
    let entry = format!(
        "unsafe extern \"C\" {{\n    \
         /// libx265's API table for `bit_depth` (8, 10 or 12; 0 for the library's default), \
         or null where this libx265 has no such build.\n    ///\n    \
         /// The header's `x265_api_get`, linked under its versioned name \
         `x265_api_get_{build}`.\n    \
         #[link_name = \"x265_api_get_{build}\"]\n    \
         pub fn x265_api_get(bit_depth: ::std::os::raw::c_int) -> *const x265_api;\n}}\n"
    );
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default());
    let written = fs::write(out.join("bindings.rs"), bindings)
        .and_then(|()| fs::write(out.join("entry.rs"), entry));
    if let Err(e) = written {
        eprintln!("nvencode-x265-sys: writing into OUT_DIR: {e}");
        std::process::exit(1);
    }
}

/// The value of `X265_BUILD` in bindgen's output (`pub const X265_BUILD: u32 = 199;`), whether
/// or not rustfmt laid it out (without rustfmt, as on a minimal toolchain, bindgen writes
/// `pub const X265_BUILD : u32 = 199 ;`).
fn x265_build(bindings: &str) -> Option<u32> {
    let compact: String = bindings.split_whitespace().collect();
    let rest = compact.split("constX265_BUILD:u32=").nth(1)?;
    rest.split(';').next()?.parse().ok()
}
