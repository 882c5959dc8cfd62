//! The loader on a machine without an NVIDIA driver: every failure is a typed error whose message
//! says what it promises. (The `NVENC_LIBRARY_PATH` override is tested inside the crate, through a
//! function that takes the variable's value, so no test changes the process environment.)

use std::path::{Path, PathBuf};

use nvenc_sys::loader::DEFAULT_LIBRARY_NAME;
use nvenc_sys::{
    check_driver_version, load, load_from, ApiVersion, Library, LoadError, NVENCSTATUS,
};

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nvenc-sys-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn driver_present() -> bool {
    Path::new("/proc/driver/nvidia").exists()
}

#[test]
fn load_from_missing_file_is_library_not_found() {
    let missing = scratch_dir().join("no-such-libnvidia-encode.so.1");
    match load_from(&missing) {
        Err(LoadError::LibraryNotFound { tried, reason }) => {
            assert_eq!(tried, [missing.display().to_string()]);
            assert!(!reason.is_empty());
        }
        other => panic!("expected LibraryNotFound, got {other:?}"),
    }
}

#[test]
fn load_from_text_file_is_not_a_library() {
    let path = scratch_dir().join("not-a-library.so");
    std::fs::write(&path, "this is text, not ELF\n").unwrap();
    match load_from(&path) {
        Err(e @ LoadError::NotALibrary { .. }) => {
            let LoadError::NotALibrary { path: p, reason } = &e else {
                unreachable!()
            };
            assert_eq!(p, &path);
            assert!(!reason.is_empty());
            assert!(
                e.to_string()
                    .contains("cannot be loaded as a shared library"),
                "{e}"
            );
        }
        other => panic!("expected NotALibrary, got {other:?}"),
    }
}

#[test]
fn load_from_unrelated_library_is_missing_symbol() {
    let candidates = [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
        "/lib/aarch64-linux-gnu/libm.so.6",
        "/usr/lib/aarch64-linux-gnu/libm.so.6",
        "/lib64/libm.so.6",
        "/usr/lib64/libm.so.6",
        "/lib/libm.so.6",
        "/usr/lib/libm.so.6",
    ];
    let Some(libm) = candidates.iter().map(Path::new).find(|p| p.exists()) else {
        eprintln!("skipped: no libm.so.6 at {candidates:?}");
        return;
    };
    match load_from(libm) {
        Err(e @ LoadError::MissingSymbol { .. }) => {
            let LoadError::MissingSymbol { symbol, path } = &e else {
                unreachable!()
            };
            assert_eq!(*symbol, "NvEncodeAPIGetMaxSupportedVersion");
            assert_eq!(path, libm);
            assert!(e.to_string().contains("not NVIDIA's NVENC library"), "{e}");
        }
        other => panic!("expected MissingSymbol, got {other:?}"),
    }
}

#[test]
fn load_without_driver_is_library_not_found() {
    if driver_present() {
        eprintln!("skipped: /proc/driver/nvidia exists, the driver's library may load");
        return;
    }
    if std::env::var_os("NVENC_LIBRARY_PATH").is_some() {
        eprintln!("skipped: NVENC_LIBRARY_PATH is set");
        return;
    }
    let first = load();
    match &first {
        Err(e @ LoadError::LibraryNotFound { tried, .. }) => {
            assert_eq!(tried, &[DEFAULT_LIBRARY_NAME]);
            let msg = e.to_string();
            for promised in [
                DEFAULT_LIBRARY_NAME,
                "display driver",
                "CUDA toolkit",
                "NVIDIA_DRIVER_CAPABILITIES",
                "video",
            ] {
                assert!(msg.contains(promised), "message lacks {promised:?}: {msg}");
            }
        }
        other => panic!("expected LibraryNotFound, got {other:?}"),
    }
    // Cached: the second call gives the same answer.
    assert_eq!(format!("{first:?}"), format!("{:?}", load()));
}

#[test]
fn driver_older_than_header_is_refused() {
    let required = ApiVersion::header();
    let older = required.to_driver_encoding() - 1;
    match check_driver_version(older) {
        Err(e @ LoadError::DriverTooOld { .. }) => {
            let LoadError::DriverTooOld {
                driver,
                required: r,
                minimum_driver,
            } = &e
            else {
                unreachable!()
            };
            assert_eq!(*driver, ApiVersion::from_driver_encoding(older));
            assert_eq!(*r, required);
            assert_eq!(*minimum_driver, required.minimum_driver());
            let msg = e.to_string();
            assert!(msg.contains(&format!("up to {driver}")), "{msg}");
            assert!(
                msg.contains(&format!("this build needs {required}")),
                "{msg}"
            );
            assert!(msg.contains("NVENC_INCLUDE_DIR"), "{msg}");
            if let Some(min) = minimum_driver {
                assert!(msg.contains(&format!("driver >= {min}")), "{msg}");
            }
        }
        other => panic!("expected DriverTooOld, got {other:?}"),
    }
}

#[test]
fn driver_too_old_for_11_1_names_470() {
    // The check itself, with the 11.1 numbers: driver 11.0 (0xb0) against header 11.1.
    if ApiVersion::header() != ApiVersion::new(11, 1) {
        eprintln!(
            "skipped: built against API {}, not 11.1",
            ApiVersion::header()
        );
        return;
    }
    let e = check_driver_version(0xb0).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the NVIDIA driver supports NVENC API up to 11.0, this build needs 11.1 (driver >= 470.57.02): \
         update the driver, or build against an older SDK header with NVENC_INCLUDE_DIR"
    );
}

#[test]
fn driver_equal_or_newer_is_accepted() {
    let required = ApiVersion::header();
    assert_eq!(
        check_driver_version(required.to_driver_encoding()).unwrap(),
        required
    );
    let newer_minor = required.to_driver_encoding() + 1;
    assert_eq!(
        check_driver_version(newer_minor).unwrap(),
        ApiVersion::from_driver_encoding(newer_minor)
    );
    let newer_major = ApiVersion::new(required.major + 1, 0);
    assert_eq!(
        check_driver_version(newer_major.to_driver_encoding()).unwrap(),
        newer_major
    );
}

#[test]
fn api_version_encodings_and_display() {
    assert_eq!(
        ApiVersion::from_driver_encoding((12 << 4) | 2),
        ApiVersion::new(12, 2)
    );
    assert_eq!(ApiVersion::new(11, 1).to_driver_encoding(), 0xb1);
    assert_eq!(ApiVersion::new(11, 1).to_header_encoding(), 11 | (1 << 24));
    assert_eq!(ApiVersion::new(11, 1).to_string(), "11.1");
    assert!(ApiVersion::new(12, 0) > ApiVersion::new(11, 9));
    assert!(ApiVersion::new(12, 2) > ApiVersion::new(12, 1));
}

#[test]
fn minimum_driver_table() {
    assert_eq!(ApiVersion::new(11, 1).minimum_driver(), Some("470.57.02"));
    assert_eq!(ApiVersion::new(12, 0).minimum_driver(), Some("520.56.06"));
    assert_eq!(ApiVersion::new(13, 0).minimum_driver(), Some("570.0"));
    let expected_12_2 = if cfg!(windows) { "551.76" } else { "550.54.14" };
    assert_eq!(ApiVersion::new(12, 2).minimum_driver(), Some(expected_12_2));
    assert_eq!(ApiVersion::new(9, 1).minimum_driver(), None);
}

#[test]
fn status_error_names_the_call_and_code() {
    let e = LoadError::Status {
        call: "NvEncodeAPICreateInstance",
        status: NVENCSTATUS::NV_ENC_ERR_INVALID_VERSION,
    };
    assert_eq!(
        e.to_string(),
        "NvEncodeAPICreateInstance failed with NV_ENC_ERR_INVALID_VERSION (15)"
    );
    let e = LoadError::MissingEntryPoint {
        name: "nvEncOpenEncodeSessionEx",
    };
    assert!(e.to_string().contains("nvEncOpenEncodeSessionEx"));
}

#[test]
fn override_not_found_names_the_variable() {
    let e = LoadError::OverrideNotFound {
        path: PathBuf::from("/nowhere/libnvidia-encode.so.1"),
    };
    let msg = e.to_string();
    assert!(
        msg.contains("NVENC_LIBRARY_PATH") && msg.contains("/nowhere/libnvidia-encode.so.1"),
        "{msg}"
    );
}

#[test]
fn types_can_cross_threads() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<Library>();
    send_sync::<LoadError>();
    fn error<T: std::error::Error + Clone>() {}
    error::<LoadError>();
}
