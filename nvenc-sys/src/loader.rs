//! Opening the NVIDIA driver's `libnvidia-encode` at run time.
//!
//! [`load`] opens the driver's library once per process (or the file named by
//! `NVENC_LIBRARY_PATH`), checks that the driver supports the API version these bindings were
//! generated for, and returns a [`Library`] holding every entry point in a [`FunctionTable`].
//! [`load_from`] does the same for a given file, without the cache. Nothing here panics: every
//! way loading can fail is a [`LoadError`] whose message says what to do about it.
//!
//! Only two symbols are looked up in the library, `NvEncodeAPIGetMaxSupportedVersion` and
//! `NvEncodeAPICreateInstance`; every other entry point comes from the function list the second
//! one fills in.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::{
    FunctionTable, NVENCAPI_MAJOR_VERSION, NVENCAPI_MINOR_VERSION, NVENCSTATUS,
    NV_ENCODE_API_FUNCTION_LIST, NV_ENCODE_API_FUNCTION_LIST_VER,
};

/// Env var that makes [`load`] open exactly this file instead of the driver's library.
pub const LIBRARY_PATH_ENV: &str = "NVENC_LIBRARY_PATH";

/// The name [`load`] asks the platform's loader for. On Linux this is the driver's versioned
/// library, never the SDK's link-time stub `libnvidia-encode.so`.
#[cfg(not(windows))]
pub const DEFAULT_LIBRARY_NAME: &str = "libnvidia-encode.so.1";
/// The name [`load`] asks the platform's loader for (searched in System32 only).
#[cfg(windows)]
pub const DEFAULT_LIBRARY_NAME: &str = "nvEncodeAPI64.dll";

const GET_MAX_SUPPORTED_VERSION: &str = "NvEncodeAPIGetMaxSupportedVersion";
const CREATE_INSTANCE: &str = "NvEncodeAPICreateInstance";

/// `NVENCSTATUS NvEncodeAPIGetMaxSupportedVersion(uint32_t *version)`.
type GetMaxSupportedVersionFn = unsafe extern "system" fn(*mut u32) -> NVENCSTATUS;
/// `NVENCSTATUS NvEncodeAPICreateInstance(NV_ENCODE_API_FUNCTION_LIST *functionList)`.
type CreateInstanceFn = unsafe extern "system" fn(*mut NV_ENCODE_API_FUNCTION_LIST) -> NVENCSTATUS;

/// An NVENC API version, such as 11.1 or 12.2.
///
/// Two encodings exist: the header's `NVENCAPI_VERSION` is `major | (minor << 24)`, the driver's
/// reply to `NvEncodeAPIGetMaxSupportedVersion` is `(major << 4) | minor`. Ordering compares the
/// major version first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion {
    /// Major version (11 in 11.1).
    pub major: u32,
    /// Minor version (1 in 11.1).
    pub minor: u32,
}

impl ApiVersion {
    /// An API version from its parts.
    #[must_use]
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// The version of the `nvEncodeAPI.h` these bindings were generated from.
    #[must_use]
    pub const fn header() -> Self {
        Self::new(NVENCAPI_MAJOR_VERSION, NVENCAPI_MINOR_VERSION)
    }

    /// Decodes the driver's encoding, `(major << 4) | minor`, as returned by
    /// `NvEncodeAPIGetMaxSupportedVersion`.
    #[must_use]
    pub const fn from_driver_encoding(encoded: u32) -> Self {
        Self::new(encoded >> 4, encoded & 0xf)
    }

    /// The driver's encoding, `(major << 4) | minor`.
    #[must_use]
    pub const fn to_driver_encoding(self) -> u32 {
        (self.major << 4) | self.minor
    }

    /// The header's encoding, `major | (minor << 24)` (what `NVENCAPI_VERSION` is for
    /// [`ApiVersion::header`]).
    #[must_use]
    pub const fn to_header_encoding(self) -> u32 {
        self.major | (self.minor << 24)
    }

    /// The oldest NVIDIA driver that supports this API version, where known.
    ///
    /// Source: the table of minimum drivers in FFmpeg's `libavcodec/nvenc.c` (recorded in the
    /// project's NVENC notes, item 2 of "Loading and versions"). Versions not in that table give
    /// `None`.
    #[must_use]
    pub fn minimum_driver(self) -> Option<&'static str> {
        match (self.major, self.minor) {
            (13, 0) => Some("570.0"),
            (12, 2) if cfg!(windows) => Some("551.76"),
            (12, 2) => Some("550.54.14"),
            (12, 1) => Some("530.41.03"),
            (12, 0) => Some("520.56.06"),
            (11, 1) => Some("470.57.02"),
            (11, 0) => Some("455.28"),
            (10, 0) => Some("445.87"),
            _ => None,
        }
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Why `libnvidia-encode` could not be loaded. The messages are written for a "why does this not
/// work on my machine" report.
#[non_exhaustive]
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    /// The platform's loader found no library by the names tried.
    #[error(
        "cannot load the NVENC library (tried {}): {reason}. libnvidia-encode is installed with the \
         NVIDIA display driver, not with the CUDA toolkit; in a container, NVIDIA_DRIVER_CAPABILITIES \
         must include `video` (for example `compute,video,utility`) for it to be mounted",
        tried.join(", ")
    )]
    LibraryNotFound {
        /// The names or paths handed to the platform's loader.
        tried: Vec<String>,
        /// The platform loader's message.
        reason: String,
    },

    /// `NVENC_LIBRARY_PATH` names a file that does not exist.
    #[error("NVENC_LIBRARY_PATH is set to {}, but there is no such file", path.display())]
    OverrideNotFound {
        /// The value of `NVENC_LIBRARY_PATH`.
        path: PathBuf,
    },

    /// The file exists but the platform's loader refused it (not a shared library, wrong
    /// architecture, missing dependency).
    #[error("{} exists but cannot be loaded as a shared library: {reason}", path.display())]
    NotALibrary {
        /// The file.
        path: PathBuf,
        /// The platform loader's message.
        reason: String,
    },

    /// The library lacks one of the two NVENC exports, so it is not an NVENC driver library.
    #[error("{} does not export {symbol}, so it is not NVIDIA's NVENC library", path.display())]
    MissingSymbol {
        /// The export that is missing.
        symbol: &'static str,
        /// The library.
        path: PathBuf,
    },

    /// The driver supports an older NVENC API than the header these bindings were built from.
    #[error(
        "the NVIDIA driver supports NVENC API up to {driver}, this build needs {required}{}: update \
         the driver, or build against an older SDK header with NVENC_INCLUDE_DIR",
        minimum_driver.map(|d| format!(" (driver >= {d})")).unwrap_or_default()
    )]
    DriverTooOld {
        /// The newest API version the installed driver supports.
        driver: ApiVersion,
        /// The API version of the header these bindings were generated from.
        required: ApiVersion,
        /// The oldest driver that supports `required`, where known.
        minimum_driver: Option<&'static str>,
    },

    /// `NvEncodeAPIGetMaxSupportedVersion` or `NvEncodeAPICreateInstance` did not succeed.
    #[error("{call} failed with {status}")]
    Status {
        /// The export that failed.
        call: &'static str,
        /// What it returned.
        status: NVENCSTATUS,
    },

    /// The driver's function list has a NULL entry that this header declares.
    #[error(
        "the NVIDIA driver did not provide the entry point {name}; the driver and the header this \
         build used disagree, update the driver"
    )]
    MissingEntryPoint {
        /// The C name of the entry, e.g. `nvEncOpenEncodeSessionEx`.
        name: &'static str,
    },
}

/// A loaded `libnvidia-encode` with every entry point of its function list.
///
/// The library stays loaded for as long as this value (or a clone) exists, so the function pointers
/// in [`Library::fns`] are valid while it is alive. The table is immutable, so a `Library` can be
/// shared between threads.
#[derive(Clone)]
pub struct Library {
    fns: FunctionTable,
    driver_max: ApiVersion,
    path: PathBuf,
    // Last, so that it is dropped after the table (which does not matter for plain pointers,
    // but states the intent).
    _lib: Arc<libloading::Library>,
}

impl fmt::Debug for Library {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Library")
            .field("path", &self.path)
            .field("driver_max_version", &self.driver_max)
            .finish_non_exhaustive()
    }
}

impl Library {
    /// Every NVENC entry point. The pointers are valid while `self` is alive.
    #[must_use]
    pub fn fns(&self) -> &FunctionTable {
        &self.fns
    }

    /// The newest NVENC API version the driver supports (at least [`ApiVersion::header`], or
    /// loading would have failed).
    #[must_use]
    pub fn driver_max_version(&self) -> ApiVersion {
        self.driver_max
    }

    /// The path or name the library was opened by (for [`load`] without `NVENC_LIBRARY_PATH`, the
    /// bare name the platform's loader searched for).
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Loads the NVENC driver library once per process and returns the same result on every call.
///
/// If `NVENC_LIBRARY_PATH` is set (and not empty), exactly that file is loaded. Otherwise the
/// platform's loader is asked for `libnvidia-encode.so.1` (Linux, its normal search path, which
/// does not include the working directory) or `nvEncodeAPI64.dll` (Windows, System32 only). The
/// working directory is never searched and the SDK's stub `libnvidia-encode.so` is never asked for.
///
/// # Errors
///
/// See [`LoadError`]; the error is cached like a success, so a process that fails once fails the
/// same way on every call.
pub fn load() -> Result<Arc<Library>, LoadError> {
    static CACHE: OnceLock<Result<Arc<Library>, LoadError>> = OnceLock::new();
    CACHE
        .get_or_init(|| {
            load_with_override(std::env::var_os(LIBRARY_PATH_ENV).as_deref()).map(Arc::new)
        })
        .clone()
}

/// Loads the NVENC library from `path`, without the cache and ignoring `NVENC_LIBRARY_PATH`.
///
/// A path with a directory part (`/opt/x/libnvidia-encode.so.1`, `./lib.so`) is opened as that
/// file. A bare file name (`libnvidia-encode.so.1`) is handed to the platform loader's search, as
/// [`load`] does.
///
/// # Errors
///
/// [`LoadError::LibraryNotFound`] if the file does not exist or the search finds nothing, then
/// the errors of [`load`].
pub fn load_from(path: impl AsRef<Path>) -> Result<Library, LoadError> {
    let path = path.as_ref();
    open_and_init(path, || LoadError::LibraryNotFound {
        tried: vec![path.display().to_string()],
        reason: "no such file".to_owned(),
    })
}

/// [`load`] without the cache, with the value of `NVENC_LIBRARY_PATH` passed in (so tests need not
/// change the process environment).
fn load_with_override(override_path: Option<&OsStr>) -> Result<Library, LoadError> {
    match override_path.filter(|p| !p.is_empty()) {
        Some(p) => {
            let path = PathBuf::from(p);
            open_and_init(&path, || LoadError::OverrideNotFound { path: path.clone() })
        }
        // A bare name: the platform loader's search, whose failure is `LibraryNotFound`.
        None => load_from(DEFAULT_LIBRARY_NAME),
    }
}

/// Whether `path` is a bare file name, which the platform's loader searches for.
fn is_bare_name(path: &Path) -> bool {
    path.parent().is_none_or(|p| p.as_os_str().is_empty())
}

/// A documentation build (`DOCS_RS` set at build time) has no bindings, so it never opens a
/// library: calling into a driver with placeholder layouts would be undefined behaviour.
#[cfg(nvenc_sys_docs_only)]
fn open_and_init(path: &Path, _missing: impl FnOnce() -> LoadError) -> Result<Library, LoadError> {
    Err(LoadError::LibraryNotFound {
        tried: vec![path.display().to_string()],
        reason: "this nvenc-sys was built for documentation only (DOCS_RS was set at build time) \
                 and has no NVENC bindings; rebuild without DOCS_RS"
            .into(),
    })
}

#[cfg(not(nvenc_sys_docs_only))]
fn open_and_init(path: &Path, missing: impl FnOnce() -> LoadError) -> Result<Library, LoadError> {
    let bare = is_bare_name(path);
    // Only a definite "does not exist"; if existence cannot be checked (permissions), the
    // platform loader's own message is more useful.
    if !bare && matches!(path.try_exists(), Ok(false)) {
        return Err(missing());
    }
    let lib = open(path, bare).map_err(|e| {
        if bare {
            LoadError::LibraryNotFound {
                tried: vec![path.display().to_string()],
                reason: e.to_string(),
            }
        } else {
            LoadError::NotALibrary {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }
        }
    })?;
    let lib = Arc::new(lib);

    let missing_symbol = |symbol| LoadError::MissingSymbol {
        symbol,
        path: path.to_path_buf(),
    };
    // SAFETY: the symbol is declared in nvEncodeAPI.h with exactly this signature; a library
    // that exports the name with another signature is not an NVENC library, and loading it is the
    // caller's explicit choice (`NVENC_LIBRARY_PATH` / `load_from`), like `LD_LIBRARY_PATH`. The
    // copied pointer is only used while `lib` is alive (below, and inside `Library`).
    let get_max: GetMaxSupportedVersionFn =
        *unsafe { lib.get::<GetMaxSupportedVersionFn>(b"NvEncodeAPIGetMaxSupportedVersion\0") }
            .map_err(|_| missing_symbol(GET_MAX_SUPPORTED_VERSION))?;
    // SAFETY: as above, for NvEncodeAPICreateInstance.
    let create_instance: CreateInstanceFn =
        *unsafe { lib.get::<CreateInstanceFn>(b"NvEncodeAPICreateInstance\0") }
            .map_err(|_| missing_symbol(CREATE_INSTANCE))?;

    let mut encoded = 0u32;
    // SAFETY: `get_max` points into `lib`, which is loaded; the argument is a valid, writable u32.
    let status = unsafe { get_max(&mut encoded) };
    if !status.is_success() {
        return Err(LoadError::Status {
            call: GET_MAX_SUPPORTED_VERSION,
            status,
        });
    }
    let driver_max = check_driver_version(encoded)?;

    // Zeroed (every entry NULL, every reserved field 0), with the version the header requires.
    let mut list = NV_ENCODE_API_FUNCTION_LIST {
        version: NV_ENCODE_API_FUNCTION_LIST_VER,
        ..Default::default()
    };
    // SAFETY: `create_instance` points into `lib`, which is loaded; `list` is a valid, zeroed
    // NV_ENCODE_API_FUNCTION_LIST of this header's layout with its version set, as the API asks.
    let status = unsafe { create_instance(&mut list) };
    if !status.is_success() {
        return Err(LoadError::Status {
            call: CREATE_INSTANCE,
            status,
        });
    }
    let fns =
        FunctionTable::from_list(&list).map_err(|name| LoadError::MissingEntryPoint { name })?;

    tracing::debug!(path = %path.display(), driver_max = %driver_max, header = %ApiVersion::header(), "loaded the NVENC library");
    Ok(Library {
        fns,
        driver_max,
        path: path.to_path_buf(),
        _lib: lib,
    })
}

/// Checks the driver's reply to `NvEncodeAPIGetMaxSupportedVersion` (encoded `(major << 4) |
/// minor`) against the header these bindings were built from.
///
/// # Errors
///
/// [`LoadError::DriverTooOld`] if the driver's newest API is older than [`ApiVersion::header`].
pub fn check_driver_version(driver_max_encoded: u32) -> Result<ApiVersion, LoadError> {
    let driver = ApiVersion::from_driver_encoding(driver_max_encoded);
    let required = ApiVersion::header();
    if required.to_driver_encoding() > driver_max_encoded {
        return Err(LoadError::DriverTooOld {
            driver,
            required,
            minimum_driver: required.minimum_driver(),
        });
    }
    Ok(driver)
}

#[cfg(unix)]
fn open(path: &Path, _bare: bool) -> Result<libloading::Library, libloading::Error> {
    use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
    // SAFETY: opening runs the library's initialisers. The default is the NVIDIA driver's own
    // library; any other file was named explicitly by the user (`NVENC_LIBRARY_PATH`,
    // `load_from`), the same trust as `LD_LIBRARY_PATH`. RTLD_NOW reports unresolved symbols
    // here rather than at a later call; RTLD_LOCAL keeps its symbols out of the global namespace.
    unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }.map(Into::into)
}

#[cfg(windows)]
fn open(path: &Path, bare: bool) -> Result<libloading::Library, libloading::Error> {
    use libloading::os::windows::{
        Library, LOAD_LIBRARY_SEARCH_DLL_LOAD_DIR, LOAD_LIBRARY_SEARCH_SYSTEM32,
    };
    use std::ffi::OsString;
    let (target, flags): (OsString, _) = if bare {
        // The driver installs nvEncodeAPI64.dll into System32; never look anywhere else.
        (path.as_os_str().to_owned(), LOAD_LIBRARY_SEARCH_SYSTEM32)
    } else {
        // LOAD_LIBRARY_SEARCH_DLL_LOAD_DIR needs an absolute path; its dependencies are searched
        // next to it and in System32, never in the working directory.
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        (
            absolute.into_os_string(),
            LOAD_LIBRARY_SEARCH_DLL_LOAD_DIR | LOAD_LIBRARY_SEARCH_SYSTEM32,
        )
    };
    // SAFETY: as for unix: the driver's own DLL, or a file the user named explicitly.
    unsafe { Library::load_with_flags(target, flags) }.map(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nvenc-sys-loader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn override_to_missing_file_is_override_not_found() {
        let missing = std::env::temp_dir().join("nvenc-sys-no-such-dir/libnvidia-encode.so.1");
        match load_with_override(Some(missing.as_os_str())) {
            Err(LoadError::OverrideNotFound { path }) => assert_eq!(path, missing),
            other => panic!("expected OverrideNotFound, got {other:?}"),
        }
    }

    #[test]
    fn override_to_text_file_is_not_a_library() {
        let path = temp_file("override-not-a-library.so", b"not an ELF file\n");
        match load_with_override(Some(path.as_os_str())) {
            Err(LoadError::NotALibrary { path: p, reason }) => {
                assert_eq!(p, path);
                assert!(!reason.is_empty());
            }
            other => panic!("expected NotALibrary, got {other:?}"),
        }
    }

    #[test]
    fn empty_override_means_default_search() {
        if Path::new("/proc/driver/nvidia").exists() {
            eprintln!("skipped: an NVIDIA driver is present, the default library may load");
            return;
        }
        match load_with_override(Some(OsStr::new(""))) {
            Err(LoadError::LibraryNotFound { tried, .. }) => {
                assert_eq!(tried, [DEFAULT_LIBRARY_NAME])
            }
            other => panic!("expected LibraryNotFound, got {other:?}"),
        }
    }

    #[test]
    fn no_override_without_driver_is_library_not_found() {
        if Path::new("/proc/driver/nvidia").exists() {
            eprintln!("skipped: an NVIDIA driver is present, the default library may load");
            return;
        }
        match load_with_override(None) {
            Err(e @ LoadError::LibraryNotFound { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(DEFAULT_LIBRARY_NAME), "{msg}");
                assert!(msg.contains("NVIDIA_DRIVER_CAPABILITIES"), "{msg}");
            }
            other => panic!("expected LibraryNotFound, got {other:?}"),
        }
    }

    #[test]
    fn bare_names_are_searched_paths_are_not() {
        assert!(is_bare_name(Path::new("libnvidia-encode.so.1")));
        assert!(!is_bare_name(Path::new("./libnvidia-encode.so.1")));
        assert!(!is_bare_name(Path::new("/usr/lib/libnvidia-encode.so.1")));
    }
}
