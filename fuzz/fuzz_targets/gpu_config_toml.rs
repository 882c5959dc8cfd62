//! `GpuEncoderConfig` from TOML (a pipeline's settings file): any text either fails with an error
//! or gives a configuration that serializes and reads back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nvencode::GpuEncoderConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = toml::from_str::<GpuEncoderConfig>(text) {
        let written = toml::to_string(&config).expect("a parsed config serializes");
        let again: GpuEncoderConfig = toml::from_str(&written).expect("and reads back");
        assert_eq!(again, config);
    }
});
