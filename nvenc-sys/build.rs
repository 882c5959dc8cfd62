//! Build script of `nvenc-sys`: generates the raw NVENC bindings from the `nvEncodeAPI.h` found on
//! this machine, plus the items bindgen cannot produce from that header.
//!
//! # Header discovery, in this order
//!
//! 1. `NVENC_INCLUDE_DIR`: a folder holding `nvEncodeAPI.h`, normally the `Interface/` folder of an
//!    NVIDIA Video Codec SDK. If it is set but holds no `nvEncodeAPI.h`, the build fails (a set
//!    variable is a request, not a hint).
//! 2. `/usr/include/ffnvcodec/nvEncodeAPI.h`, installed by Debian/Ubuntu's `libffmpeg-nvenc-dev`
//!    (FFmpeg's nv-codec-headers; on Debian 12/13 that is API 11.1, which needs NVIDIA driver
//!    >= 470.57).
//!
//! If neither is found the build fails with a message that says what to install or set.
//!
//! # Documentation builds (docs.rs)
//!
//! docs.rs builds without the header, without libclang and without network, and sets `DOCS_RS`
//! for every build script. With `DOCS_RS` set this script generates nothing: it sets the cfg
//! `nvenc_sys_docs_only`, under which the crate compiles `src/docs_only.rs` (placeholders named
//! after the C types, with no layout, and a loader that refuses to open any library) instead of
//! the bindings. Such a build documents the crate and lets crates above it be documented; it can
//! never call the driver. No header text and no generated binding is kept in the repository.
//!
//! # What is generated into `OUT_DIR`
//!
//! - `bindings.rs`: bindgen's output, NVENC items only. C enums become `#[repr(transparent)]`
//!   newtypes with associated constants, so a value the driver returns that this header does not
//!   know is still a valid Rust value.
//! - `header_items.rs`: items read from the header *text*, because bindgen cannot turn them into
//!   Rust: the API version (`NVENCAPI_MAJOR_VERSION`, `NVENCAPI_MINOR_VERSION`,
//!   `NVENCAPI_VERSION`), every per-struct `NV_ENC_*_VER` constant (function-like macros), every
//!   `static const GUID` (static data with an initialiser), and `NVENCSTATUS::name`.
//! - `function_table.rs`: `FunctionTable`, one non-optional field per entry of
//!   `NV_ENCODE_API_FUNCTION_LIST`, in the header's order, and `FunctionTable::from_list`.
//!
//! Nothing that belongs to one SDK release is written down by hand here: every number and every
//! entry point comes from the header being built against.

use std::collections::BTreeSet;
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use regex::Regex;

/// Env var naming a folder that holds `nvEncodeAPI.h` (the Video Codec SDK's `Interface/`).
const INCLUDE_DIR_ENV: &str = "NVENC_INCLUDE_DIR";
/// Where Debian/Ubuntu's `libffmpeg-nvenc-dev` installs the header.
const SYSTEM_HEADER: &str = "/usr/include/ffnvcodec/nvEncodeAPI.h";
const HEADER_NAME: &str = "nvEncodeAPI.h";
/// Set by docs.rs in the environment of every build script of a documentation build.
const DOCS_RS_ENV: &str = "DOCS_RS";
/// The cfg under which the crate compiles its documentation-only placeholders.
const DOCS_ONLY_CFG: &str = "nvenc_sys_docs_only";

fn main() {
    println!("cargo:rerun-if-env-changed={INCLUDE_DIR_ENV}");
    println!("cargo:rerun-if-env-changed={DOCS_RS_ENV}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-check-cfg=cfg({DOCS_ONLY_CFG})");

    if env::var_os(DOCS_RS_ENV).is_some() {
        // No header, no libclang: see "Documentation builds" above.
        println!("cargo:rustc-cfg={DOCS_ONLY_CFG}");
        println!(
            "cargo:warning=nvenc-sys: {DOCS_RS_ENV} is set, so this is a documentation-only build \
             without NVENC bindings; it cannot load the driver. Unset {DOCS_RS_ENV} for a real build."
        );
        return;
    }

    let header = find_header();
    println!("cargo:rerun-if-changed={}", header.display());
    // Lets the crate's tests read the same header text and check the derived items against it.
    println!("cargo:rustc-env=NVENC_SYS_HEADER_PATH={}", header.display());

    let text = fs::read_to_string(&header)
        .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", header.display())));
    let code = strip_comments(&text);

    let version = parse_api_version(&code);
    let struct_versions = parse_struct_versions(&code, version);
    let guids = parse_guids(&code);
    let entries = parse_function_list(&code);

    // Everything emitted from the header text is kept out of bindgen's output, so no name is
    // defined twice.
    let mut own_items: Vec<String> = vec![
        "NVENCAPI_MAJOR_VERSION".into(),
        "NVENCAPI_MINOR_VERSION".into(),
        "NVENCAPI_VERSION".into(),
    ];
    own_items.extend(struct_versions.iter().map(|v| v.name.clone()));
    own_items.extend(guids.iter().map(|g| g.name.clone()));

    let out_dir =
        PathBuf::from(env::var_os("OUT_DIR").unwrap_or_else(|| fail("OUT_DIR is not set")));
    let status_names = generate_bindings(&header, &own_items, &out_dir.join("bindings.rs"));

    let mut items = String::new();
    emit_versions(&mut items, &header, version, &struct_versions);
    emit_guids(&mut items, &guids);
    emit_status_names(&mut items, &status_names);
    write(&out_dir.join("header_items.rs"), &items);

    write(
        &out_dir.join("function_table.rs"),
        &emit_function_table(&entries),
    );
}

/// Stops the build with a message; build scripts report failure through their exit status.
fn fail(msg: &str) -> ! {
    eprintln!("error: nvenc-sys: {msg}");
    std::process::exit(1);
}

fn write(path: &Path, contents: &str) {
    if let Err(e) = fs::write(path, contents) {
        fail(&format!("cannot write {}: {e}", path.display()));
    }
}

fn find_header() -> PathBuf {
    if let Some(dir) = env::var_os(INCLUDE_DIR_ENV).filter(|d| !d.is_empty()) {
        let candidate = Path::new(&dir).join(HEADER_NAME);
        if candidate.is_file() {
            return candidate;
        }
        fail(&format!(
            "{INCLUDE_DIR_ENV} is set to {}, but {} does not exist there; point it at the \
             Interface/ folder of the NVIDIA Video Codec SDK",
            Path::new(&dir).display(),
            HEADER_NAME
        ));
    }
    let system = Path::new(SYSTEM_HEADER);
    if system.is_file() {
        return system.to_path_buf();
    }
    fail(&format!(
        "cannot find {HEADER_NAME}: install `libffmpeg-nvenc-dev` (Debian/Ubuntu; it provides \
         {SYSTEM_HEADER}) or set {INCLUDE_DIR_ENV} to the Interface/ folder of the NVIDIA Video \
         Codec SDK"
    ))
}

/// Removes `/* */` and `//` comments, keeping line breaks, so the parsers below see only code.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('/', Some('*')) => {
                chars.next();
                let mut prev = '\0';
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                    }
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
                out.push(' ');
            }
            ('/', Some('/')) => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            _ => out.push(c),
        }
    }
    out
}

fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| fail(&format!("bad regex {pattern}: {e}")))
}

fn parse_int(text: &str) -> u64 {
    let t = text.trim().trim_end_matches(['u', 'U', 'l', 'L']);
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => t.parse(),
    };
    parsed.unwrap_or_else(|e| {
        fail(&format!(
            "cannot read the number `{text}` in the header: {e}"
        ))
    })
}

#[derive(Clone, Copy)]
struct ApiVersion {
    major: u32,
    minor: u32,
}

impl ApiVersion {
    /// `NVENCAPI_VERSION` as the header defines it: `major | (minor << 24)`.
    fn encoded(self) -> u32 {
        self.major | (self.minor << 24)
    }
}

fn parse_define_number(code: &str, name: &str) -> u32 {
    let re = regex(&format!(
        r"(?m)^[ \t]*#[ \t]*define[ \t]+{name}[ \t]+\(?[ \t]*(\w+)[ \t]*\)?[ \t]*$"
    ));
    let caps = re
        .captures(code)
        .unwrap_or_else(|| fail(&format!("the header has no `#define {name} <number>`")));
    let value = parse_int(&caps[1]);
    u32::try_from(value).unwrap_or_else(|_| fail(&format!("{name} = {value} does not fit in u32")))
}

fn parse_api_version(code: &str) -> ApiVersion {
    let version = ApiVersion {
        major: parse_define_number(code, "NVENCAPI_MAJOR_VERSION"),
        minor: parse_define_number(code, "NVENCAPI_MINOR_VERSION"),
    };
    // The formulas below are the ones this header states; refuse a header that says otherwise
    // rather than emit constants the driver would reject with NV_ENC_ERR_INVALID_VERSION.
    let squash = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    let defines: Vec<String> = code.lines().map(squash).collect();
    let expect = |wanted: &str| {
        if !defines.iter().any(|d| d == wanted) {
            fail(&format!("the header does not contain `{wanted}` (spaces ignored); this build script only knows that encoding"));
        }
    };
    expect("#defineNVENCAPI_VERSION(NVENCAPI_MAJOR_VERSION|(NVENCAPI_MINOR_VERSION<<24))");
    expect("#defineNVENCAPI_STRUCT_VERSION(ver)((uint32_t)NVENCAPI_VERSION|((ver)<<16)|(0x7<<28))");
    version
}

struct StructVersion {
    name: String,
    number: u32,
    high_bit: bool,
    value: u32,
}

fn parse_struct_versions(code: &str, version: ApiVersion) -> Vec<StructVersion> {
    let re = regex(
        r"^#\s*define\s+(NV_ENC\w*_VER)\s+(\(\s*)?NVENCAPI_STRUCT_VERSION\s*\(\s*(\w+)\s*\)\s*(\|\s*\(\s*1[uU]?\s*<<\s*31\s*\)\s*)?(\))?\s*$",
    );
    let mut out = Vec::new();
    for line in code.lines().map(str::trim) {
        if !(line.starts_with('#') && line.contains("NVENCAPI_STRUCT_VERSION")) {
            continue;
        }
        if line.contains("NVENCAPI_STRUCT_VERSION(ver)") {
            continue; // the macro's own definition
        }
        let Some(caps) = re.captures(line) else {
            fail(&format!("cannot read the struct version definition `{line}`; extend parse_struct_versions in build.rs"))
        };
        if caps.get(2).is_some() != caps.get(5).is_some() {
            fail(&format!("unbalanced parentheses in `{line}`"));
        }
        let number = u32::try_from(parse_int(&caps[3]))
            .ok()
            .filter(|n| *n < 16)
            .unwrap_or_else(|| fail(&format!("struct version in `{line}` is not a small number")));
        let high_bit = caps.get(4).is_some();
        let value =
            version.encoded() | (number << 16) | (0x7 << 28) | if high_bit { 1 << 31 } else { 0 };
        out.push(StructVersion {
            name: caps[1].to_string(),
            number,
            high_bit,
            value,
        });
    }
    if out.is_empty() {
        fail("found no `#define NV_ENC_*_VER NVENCAPI_STRUCT_VERSION(n)` in the header");
    }
    out
}

struct Guid {
    name: String,
    deprecated: bool,
    data1: u32,
    data2: u16,
    data3: u16,
    data4: [u8; 8],
}

fn parse_guids(code: &str) -> Vec<Guid> {
    let re = regex(
        r"(NV_ENC_DEPRECATED\s+)?static\s+const\s+GUID\s+(\w+)\s*=\s*\{\s*(\w+)\s*,\s*(\w+)\s*,\s*(\w+)\s*,\s*\{([^{}]*)\}\s*\}\s*;",
    );
    let mut out = Vec::new();
    for caps in re.captures_iter(code) {
        let name = caps[2].to_string();
        let narrow = |text: &str, max: u64| {
            let v = parse_int(text);
            if v > max {
                fail(&format!("GUID {name}: {text} is out of range"));
            }
            v
        };
        let bytes: Vec<&str> = caps[6].split(',').map(str::trim).collect();
        if bytes.len() != 8 {
            fail(&format!(
                "GUID {name}: expected 8 bytes in Data4, found {}",
                bytes.len()
            ));
        }
        let mut data4 = [0u8; 8];
        for (slot, text) in data4.iter_mut().zip(&bytes) {
            *slot = narrow(text, 0xff) as u8;
        }
        out.push(Guid {
            deprecated: caps.get(1).is_some(),
            data1: narrow(&caps[3], 0xffff_ffff) as u32,
            data2: narrow(&caps[4], 0xffff) as u16,
            data3: narrow(&caps[5], 0xffff) as u16,
            data4,
            name,
        });
    }
    let declared = regex(r"static\s+const\s+GUID\b").find_iter(code).count();
    if declared != out.len() {
        fail(&format!(
            "the header declares {declared} `static const GUID`s but only {} could be read; extend parse_guids in build.rs",
            out.len()
        ));
    }
    out
}

struct Entry {
    c_name: String,
    ty: String,
    field: String,
}

fn parse_function_list(code: &str) -> Vec<Entry> {
    let re = regex(
        r"typedef\s+struct\s+_NV_ENCODE_API_FUNCTION_LIST\s*\{([^}]*)\}\s*NV_ENCODE_API_FUNCTION_LIST\s*;",
    );
    let caps = re.captures(code).unwrap_or_else(|| {
        fail("cannot find `typedef struct _NV_ENCODE_API_FUNCTION_LIST { ... }` in the header")
    });
    let field_re = regex(r"^(\w+)\s*(\*?)\s*(\w+)\s*(\[\s*\w+\s*\])?$");
    let mut entries = Vec::new();
    let mut seen = BTreeSet::new();
    for decl in caps[1]
        .split(';')
        .map(|d| d.split_whitespace().collect::<Vec<_>>().join(" "))
    {
        if decl.is_empty() {
            continue;
        }
        let Some(f) = field_re.captures(&decl) else {
            fail(&format!(
                "cannot read the NV_ENCODE_API_FUNCTION_LIST field `{decl}`"
            ))
        };
        let (ty, name) = (&f[1], &f[3]);
        if name == "version" || name.starts_with("reserved") {
            continue;
        }
        if !(ty.starts_with("PNVENC")
            && name.starts_with("nvEnc")
            && f[2].is_empty()
            && f.get(4).is_none())
        {
            fail(&format!("unexpected NV_ENCODE_API_FUNCTION_LIST field `{decl}`: expected `PNVENC... nvEnc...`"));
        }
        let field = snake_case(&name["nvEnc".len()..]);
        if !seen.insert(field.clone()) {
            fail(&format!(
                "two entries of NV_ENCODE_API_FUNCTION_LIST map to the field name `{field}`"
            ));
        }
        entries.push(Entry {
            c_name: name.to_string(),
            ty: ty.to_string(),
            field,
        });
    }
    if entries.is_empty() {
        fail("NV_ENCODE_API_FUNCTION_LIST has no entry points");
    }
    entries
}

/// `OpenEncodeSessionEx` → `open_encode_session_ex`, `GetEncodeGUIDs` → `get_encode_guids`,
/// `SetIOCudaStreams` → `set_io_cuda_streams`, `CreateMVBuffer` → `create_mv_buffer`.
fn snake_case(camel: &str) -> String {
    let chars: Vec<char> = camel.chars().collect();
    let mut words: Vec<String> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let start = i;
        if chars[i].is_ascii_uppercase() {
            // An uppercase run: an acronym ("GUID", "IO") or the capital of a word ("Open").
            let mut j = i;
            while j < chars.len() && chars[j].is_ascii_uppercase() {
                j += 1;
            }
            let run = j - i;
            let mut lower_end = j;
            while lower_end < chars.len() && !chars[lower_end].is_ascii_uppercase() {
                lower_end += 1;
            }
            let tail: String = chars[j..lower_end].iter().collect();
            if run == 1 || j == chars.len() || tail == "s" {
                // "Open", a trailing acronym, or a plural acronym ("GUIDs").
                i = lower_end;
            } else {
                // "IOCuda": the last capital starts the next word.
                i = j - 1;
            }
        } else {
            while i < chars.len() && !chars[i].is_ascii_uppercase() {
                i += 1;
            }
        }
        words.push(
            chars[start..i]
                .iter()
                .collect::<String>()
                .to_ascii_lowercase(),
        );
    }
    words.join("_")
}

#[derive(Debug, Default)]
struct Callbacks {
    status_names: Arc<Mutex<Vec<String>>>,
}

impl bindgen::callbacks::ParseCallbacks for Callbacks {
    fn enum_variant_name(
        &self,
        enum_name: Option<&str>,
        original_variant_name: &str,
        _variant_value: bindgen::callbacks::EnumVariantValue,
    ) -> Option<String> {
        if enum_name
            .is_some_and(|n| n.trim_start_matches("enum ").trim_start_matches('_') == "NVENCSTATUS")
        {
            if let Ok(mut names) = self.status_names.lock() {
                names.push(original_variant_name.to_string());
            }
        }
        None
    }

    /// The header's doc comments are Doxygen: `[in]:` would be read by rustdoc as a link and
    /// continuation lines indented by many spaces as code blocks (which `cargo test` would try
    /// to compile as doctests). Keep the text, drop the indentation, and escape the characters
    /// Markdown would read as links, HTML, code, emphasis or headings.
    fn process_comment(&self, comment: &str) -> Option<String> {
        let mut out = String::with_capacity(comment.len());
        for (i, line) in comment.lines().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            for c in line.trim().chars() {
                match c {
                    '[' | ']' | '<' | '>' | '`' | '*' | '#' => {
                        out.push('\\');
                        out.push(c);
                    }
                    _ => out.push(c),
                }
            }
        }
        Some(out)
    }
}

fn generate_bindings(header: &Path, own_items: &[String], out: &Path) -> Vec<String> {
    let callbacks = Callbacks::default();
    let status_names = Arc::clone(&callbacks.status_names);
    let mut builder = bindgen::Builder::default()
        .header(header.to_string_lossy())
        .parse_callbacks(Box::new(callbacks))
        .use_core()
        .allowlist_type("(_?NV_ENC.*|_?NVENC.*|NvEncode.*|PNVENC.*|GUID|NV_ENCODE.*)")
        .allowlist_function("(NvEncode.*)")
        .allowlist_var("(_?NV_ENC.*|_?NVENC.*|NV_MAX_SEQ_HDR_LEN)")
        // Status codes and every other C enum: a newtype over the integer with associated
        // constants. A Rust enum would make an unknown value from the driver undefined behaviour.
        .default_enum_style(bindgen::EnumVariation::NewType {
            is_bitfield: false,
            is_global: false,
        })
        .bitfield_enum("_?NV_ENC_PIC_FLAGS")
        .derive_default(true)
        .prepend_enum_name(false)
        .layout_tests(true);
    // Generate code for the workspace's minimum Rust version, not for bindgen's newest target.
    if let Some(target) = env::var("CARGO_PKG_RUST_VERSION")
        .ok()
        .and_then(|v| {
            let mut parts = v.split('.').skip(1).map(|p| p.parse::<u64>().ok());
            Some((parts.next()??, parts.next().flatten().unwrap_or(0)))
        })
        .and_then(|(minor, patch)| bindgen::RustTarget::stable(minor, patch).ok())
    {
        builder = builder.rust_target(target);
    }
    for item in own_items {
        builder = builder.blocklist_item(format!("^{item}$"));
    }
    let bindings = builder
        .generate()
        .unwrap_or_else(|e| fail(&format!("bindgen failed on {}: {e}", header.display())));
    if let Err(e) = bindings.write_to_file(out) {
        fail(&format!("cannot write {}: {e}", out.display()));
    }
    let names = status_names.lock().map(|n| n.clone()).unwrap_or_default();
    if !names.iter().any(|n| n == "NV_ENC_SUCCESS") {
        fail("bindgen reported no NVENCSTATUS values (NV_ENC_SUCCESS missing)");
    }
    names
}

fn emit_versions(out: &mut String, header: &Path, v: ApiVersion, structs: &[StructVersion]) {
    let _ = writeln!(out, "// Read from {} by build.rs.\n", header.display());
    let _ = writeln!(
        out,
        "/// `NVENCAPI_MAJOR_VERSION` of the header these bindings were generated from."
    );
    let _ = writeln!(out, "pub const NVENCAPI_MAJOR_VERSION: u32 = {};", v.major);
    let _ = writeln!(
        out,
        "/// `NVENCAPI_MINOR_VERSION` of the header these bindings were generated from."
    );
    let _ = writeln!(out, "pub const NVENCAPI_MINOR_VERSION: u32 = {};", v.minor);
    let _ = writeln!(
        out,
        "/// `NVENCAPI_VERSION = NVENCAPI_MAJOR_VERSION | (NVENCAPI_MINOR_VERSION << 24)`: the value for\n\
         /// `NV_ENC_OPEN_ENCODE_SESSION_EX_PARAMS::apiVersion`."
    );
    let _ = writeln!(
        out,
        "pub const NVENCAPI_VERSION: u32 = {:#010x};\n",
        v.encoded()
    );
    for s in structs {
        let high = if s.high_bit { " | (1 << 31)" } else { "" };
        let _ = writeln!(
            out,
            "/// `NVENCAPI_STRUCT_VERSION({n}){high}` = `NVENCAPI_VERSION | ({n} << 16) | (0x7 << 28){high}`.",
            n = s.number
        );
        let _ = writeln!(out, "pub const {}: u32 = {:#010x};", s.name, s.value);
    }
    out.push('\n');
}

fn emit_guids(out: &mut String, guids: &[Guid]) {
    for g in guids {
        let d4: Vec<String> = g.data4.iter().map(|b| format!("{b:#04x}")).collect();
        let _ = writeln!(
            out,
            "/// `{{{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{}}}`",
            g.data1,
            g.data2,
            g.data3,
            g.data4[0],
            g.data4[1],
            g.data4[2..]
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect::<String>()
        );
        if g.deprecated {
            let _ = writeln!(
                out,
                "#[deprecated(note = \"marked NV_ENC_DEPRECATED in nvEncodeAPI.h: use the P1..P7 presets with a tuning info\")]"
            );
        }
        let _ = writeln!(
            out,
            "pub const {}: GUID = GUID {{ Data1: {:#010x}, Data2: {:#06x}, Data3: {:#06x}, Data4: [{}] }};",
            g.name,
            g.data1,
            g.data2,
            g.data3,
            d4.join(", ")
        );
    }
    out.push('\n');
}

fn emit_status_names(out: &mut String, names: &[String]) {
    out.push_str(
        "impl NVENCSTATUS {\n    \
         /// The C name of this status (`\"NV_ENC_ERR_INVALID_VERSION\"`), or `None` for a value\n    \
         /// the header these bindings were generated from does not define.\n    \
         #[must_use]\n    \
         pub const fn name(self) -> Option<&'static str> {\n        \
         match self {\n",
    );
    for n in names {
        let _ = writeln!(out, "            Self::{n} => Some(\"{n}\"),");
    }
    out.push_str("            _ => None,\n        }\n    }\n}\n");
}

fn emit_function_table(entries: &[Entry]) -> String {
    let mut out = String::new();
    out.push_str(
        "/// Every entry point of `NV_ENCODE_API_FUNCTION_LIST`, none of them optional, in the order of\n\
         /// the header these bindings were generated from (generated by build.rs from that header).\n\
         ///\n\
         /// Obtain one from [`FunctionTable::from_list`] after `NvEncodeAPICreateInstance` filled the\n\
         /// list, or from a loaded [`Library`](crate::loader::Library), which keeps the driver library\n\
         /// mapped for as long as the table is reachable through it.\n\
         #[derive(Clone, Debug)]\n\
         pub struct FunctionTable {\n",
    );
    for e in entries {
        let _ = writeln!(out, "    /// `{}` (`{}`).", e.c_name, e.ty);
        let _ = writeln!(out, "    #[doc(alias = \"{}\")]", e.c_name);
        let _ = writeln!(
            out,
            "    pub {}: <{} as crate::OptionFn>::Fn,",
            e.field, e.ty
        );
    }
    out.push_str("}\n\n");

    out.push_str("impl FunctionTable {\n");
    let _ =
        writeln!(
        out,
        "    /// The C names of the entries, in the order of `NV_ENCODE_API_FUNCTION_LIST`.\n    \
         pub const ENTRY_NAMES: [&'static str; {}] = [{}];\n",
        entries.len(),
        entries.iter().map(|e| format!("\"{}\"", e.c_name)).collect::<Vec<_>>().join(", ")
    );
    out.push_str(
        "    /// Copies every entry of a function list filled by `NvEncodeAPICreateInstance`.\n    \
         ///\n    \
         /// # Errors\n    \
         ///\n    \
         /// The C name of the first entry (in the header's order) that is NULL.\n    \
         pub fn from_list(list: &NV_ENCODE_API_FUNCTION_LIST) -> Result<Self, &'static str> {\n        \
         Ok(Self {\n",
    );
    for e in entries {
        let _ = writeln!(
            out,
            "            {}: match list.{} {{ Some(f) => f, None => return Err(\"{}\") }},",
            e.field, e.c_name, e.c_name
        );
    }
    out.push_str("        })\n    }\n}\n");
    out
}
