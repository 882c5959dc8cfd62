//! The loader's success and driver-side failure paths, against tiny stand-in libraries compiled
//! from C at test time with the same `nvEncodeAPI.h` the crate was built from. Each stand-in
//! exports the two NVENC entry points and behaves as told by `-D` flags. Skipped (loudly) when
//! no C compiler is found.

#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::Command;

use nvenc_sys::{load_from, ApiVersion, FunctionTable, LoadError, NVENCSTATUS};

const FAKE_DRIVER_C: &str = r#"
#include <stddef.h>
#include <stdint.h>
#include "nvEncodeAPI.h"

static NVENCSTATUS NVENCAPI fake_entry(void) { return NV_ENC_ERR_UNIMPLEMENTED; }

static NVENCSTATUS NVENCAPI fake_open(void *device, uint32_t device_type, void **encoder)
{
    (void)device;
    (void)device_type;
    *encoder = (void *)0x1234;
    return NV_ENC_ERR_NO_ENCODE_DEVICE;
}

static NVENCSTATUS NVENCAPI fake_destroy(void *encoder)
{
    return encoder == (void *)0x1234 ? NV_ENC_SUCCESS : NV_ENC_ERR_INVALID_PTR;
}

NVENCSTATUS NVENCAPI NvEncodeAPIGetMaxSupportedVersion(uint32_t *version)
{
    *version = FAKE_MAX_VERSION;
    return NV_ENC_SUCCESS;
}

NVENCSTATUS NVENCAPI NvEncodeAPICreateInstance(NV_ENCODE_API_FUNCTION_LIST *list)
{
    /* The loader must set the version the header asks for. */
    if (list->version != NV_ENCODE_API_FUNCTION_LIST_VER)
        return NV_ENC_ERR_INVALID_VERSION;
#if FAKE_FILL_ALL
    void **slots = (void **)&list->nvEncOpenEncodeSession;
    size_t n = (sizeof(*list) - offsetof(NV_ENCODE_API_FUNCTION_LIST, nvEncOpenEncodeSession)) / sizeof(void *);
    for (size_t i = 0; i < n; i++)
        slots[i] = (void *)fake_entry;
    /* Two entries with their real signatures, to check the table maps fields to entries. */
    list->nvEncOpenEncodeSession = fake_open;
    list->nvEncDestroyEncoder = fake_destroy;
#else
    list->nvEncOpenEncodeSession = (PNVENCOPENENCODESESSION)fake_entry;
#endif
    return FAKE_CREATE_STATUS;
}
"#;

/// Compiles a stand-in driver; `None` (after saying why) when there is no C compiler.
fn fake_driver(
    variant: &str,
    max_version: u32,
    fill_all: bool,
    create_status: &str,
) -> Option<PathBuf> {
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let header_dir = Path::new(env!("NVENC_SYS_HEADER_PATH"))
        .parent()
        .unwrap()
        .to_path_buf();
    let dir = std::env::temp_dir().join(format!("nvenc-sys-fake-driver-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = dir.join(format!("{variant}.c"));
    std::fs::write(&source, FAKE_DRIVER_C).unwrap();
    let library = dir.join(format!("libfake-{variant}.so"));
    let output = Command::new(&compiler)
        .args(["-shared", "-fPIC", "-O0", "-o"])
        .arg(&library)
        .arg("-I")
        .arg(&header_dir)
        .arg(format!("-DFAKE_MAX_VERSION={max_version}u"))
        .arg(format!("-DFAKE_FILL_ALL={}", u8::from(fill_all)))
        .arg(format!("-DFAKE_CREATE_STATUS={create_status}"))
        .arg(&source)
        .output();
    match output {
        Err(e) => {
            eprintln!("skipped: cannot run the C compiler `{compiler}`: {e}");
            None
        }
        Ok(out) => {
            assert!(
                out.status.success(),
                "compiling the fake driver failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            Some(library)
        }
    }
}

#[test]
fn loads_a_driver_that_fills_every_entry() {
    let header = ApiVersion::header();
    let newer = ApiVersion::new(header.major, header.minor + 1);
    let Some(path) = fake_driver(
        "complete",
        newer.to_driver_encoding(),
        true,
        "NV_ENC_SUCCESS",
    ) else {
        return;
    };
    let lib = load_from(&path).unwrap();
    assert_eq!(lib.driver_max_version(), newer);
    assert_eq!(lib.path(), path);
    let mut encoder = std::ptr::null_mut();
    // SAFETY: the stand-in's nvEncOpenEncodeSession has this signature and writes one pointer to
    // `encoder`; `lib` keeps the library loaded during the call.
    let status = unsafe { (lib.fns().open_encode_session)(std::ptr::null_mut(), 0, &mut encoder) };
    assert_eq!(status, NVENCSTATUS::NV_ENC_ERR_NO_ENCODE_DEVICE);
    assert_eq!(encoder as usize, 0x1234);
    // A clone shares the library; the table stays usable after the original is dropped.
    let clone = lib.clone();
    drop(lib);
    // SAFETY: the stand-in's nvEncDestroyEncoder has this signature and only compares the pointer;
    // `clone` holds the library.
    let status = unsafe { (clone.fns().destroy_encoder)(encoder) };
    assert_eq!(status, NVENCSTATUS::NV_ENC_SUCCESS);
}

#[test]
fn refuses_a_driver_older_than_the_header() {
    let header = ApiVersion::header();
    let older = header.to_driver_encoding() - 1;
    let Some(path) = fake_driver("too-old", older, true, "NV_ENC_SUCCESS") else {
        return;
    };
    match load_from(&path) {
        Err(LoadError::DriverTooOld {
            driver,
            required,
            minimum_driver,
        }) => {
            assert_eq!(driver, ApiVersion::from_driver_encoding(older));
            assert_eq!(required, header);
            assert_eq!(minimum_driver, header.minimum_driver());
        }
        other => panic!("expected DriverTooOld, got {other:?}"),
    }
}

#[test]
fn reports_the_status_of_a_failing_create_instance() {
    let max = ApiVersion::header().to_driver_encoding();
    let Some(path) = fake_driver("create-fails", max, true, "NV_ENC_ERR_GENERIC") else {
        return;
    };
    match load_from(&path) {
        Err(LoadError::Status { call, status }) => {
            assert_eq!(call, "NvEncodeAPICreateInstance");
            assert_eq!(status, NVENCSTATUS::NV_ENC_ERR_GENERIC);
        }
        other => panic!("expected Status, got {other:?}"),
    }
}

#[test]
fn names_the_first_entry_the_driver_left_null() {
    let max = ApiVersion::header().to_driver_encoding();
    let Some(path) = fake_driver("partial", max, false, "NV_ENC_SUCCESS") else {
        return;
    };
    match load_from(&path) {
        Err(LoadError::MissingEntryPoint { name }) => {
            assert_eq!(name, FunctionTable::ENTRY_NAMES[1])
        }
        other => panic!("expected MissingEntryPoint, got {other:?}"),
    }
}
