//! The `ffmpeg` command line of the subprocess backend: its settings ([`FfmpegOptions`]) and the
//! arguments for a configuration. What each neutral setting becomes is
//! [`crate::encoder::mapping`]'s; this file only puts the arguments in order.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::encoder::codecs;
use crate::encoder::mapping;
use crate::encoder::{EncoderConfig, EncoderKind, FfmpegFamily};
use crate::error::Error;

/// Settings of the subprocess backend.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FfmpegOptions {
    /// Which FFmpeg encoder family to run; the encoder is the family's for
    /// [`EncoderConfig::codec`] ([`crate::encoder::codecs::ffmpeg_name`]).
    pub family: FfmpegFamily,
    /// The `ffmpeg` binary: a path, or a name looked up on `PATH`.
    pub program: PathBuf,
    /// The longest any single wait on the child may take (a frame written, the end of stream
    /// drained) before the child is declared hung, killed and reported.
    pub timeout: Duration,
    /// The VA-API render node for `h264_vaapi`.
    pub vaapi_device: PathBuf,
}

impl FfmpegOptions {
    /// `family` through `ffmpeg` on `PATH`, a 20 s timeout, and `/dev/dri/renderD128` for VA-API.
    #[must_use]
    pub fn new(family: FfmpegFamily) -> Self {
        FfmpegOptions {
            family,
            program: PathBuf::from("ffmpeg"),
            timeout: Duration::from_secs(20),
            vaapi_device: PathBuf::from("/dev/dri/renderD128"),
        }
    }

    /// Sets [`FfmpegOptions::program`].
    #[must_use]
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    /// Sets [`FfmpegOptions::timeout`].
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// The arguments after `-c:v <encoder>` for a configuration: preset, tune and GOP from
/// [`mapping::ffmpeg_tuning`], then the rate control from [`mapping::ffmpeg`] (see the module
/// table and the README's).
///
/// # Errors
/// [`Error::Unsupported`] for a rate control the encoder lacks (constant QP on VideoToolbox).
fn codec_args(config: &EncoderConfig, options: &FfmpegOptions) -> Result<Vec<String>, Error> {
    let mut args = mapping::ffmpeg_tuning(options.family, config);
    args.extend(mapping::ffmpeg(options.family, config)?);
    Ok(args)
}

/// Every argument of the `ffmpeg` command line after the program: raw frames of `config` on
/// stdin, the encoder of `options` with its settings, MPEG-TS on stdout.
///
/// # Errors
/// As [`codec_args`].
pub(crate) fn command_args(
    config: &EncoderConfig,
    options: &FfmpegOptions,
) -> Result<Vec<OsString>, Error> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |list: &[&str]| args.extend(list.iter().map(OsString::from));
    push(&["-hide_banner", "-nostdin", "-loglevel", "error"]);
    if options.family == FfmpegFamily::Vaapi {
        push(&["-vaapi_device"]);
        args.push(options.vaapi_device.clone().into_os_string());
    }
    let mut push = |list: &[&str]| args.extend(list.iter().map(OsString::from));
    push(&[
        "-f",
        "rawvideo",
        "-pix_fmt",
        &config.pixel_format.to_string(),
    ]);
    push(&["-s", &config.resolution.to_string()]);
    push(&[
        "-r",
        &format!("{}/{}", config.frame_rate.num, config.frame_rate.den),
    ]);
    push(&["-i", "pipe:0"]);
    if options.family == FfmpegFamily::Vaapi {
        push(&["-vf", "format=nv12,hwupload"]);
    }
    let encoder = codecs::ffmpeg_name(options.family, config.codec).ok_or_else(|| {
        codecs::check(EncoderKind::Ffmpeg(options.family), config.codec)
            .err()
            .map_or_else(
                || Error::Unsupported {
                    backend: EncoderKind::Ffmpeg(options.family),
                    feature: "this codec",
                },
                Error::from,
            )
    })?;
    push(&["-an", "-c:v", encoder]);
    args.extend(codec_args(config, options)?.into_iter().map(OsString::from));
    args.extend(
        [
            "-f",
            "mpegts",
            "-muxdelay",
            "0",
            "-muxpreload",
            "0",
            "pipe:1",
        ]
        .iter()
        .map(OsString::from),
    );
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::{RateControl, Tune};

    #[test]
    fn arguments_follow_the_mapping_table() {
        let config = EncoderConfig::new(64, 64)
            .with_crf(20.0)
            .with_gop_size(30)
            .with_bframes(Some(2));
        let args = codec_args(&config, &FfmpegOptions::new(FfmpegFamily::Nvenc)).unwrap();
        assert_eq!(
            args,
            ["-preset", "p4", "-tune", "hq", "-g", "30", "-bf", "2", "-rc", "vbr", "-cq", "20"]
        );
        let args = codec_args(
            &config.clone().with_tune(Some(Tune::Zerolatency)),
            &FfmpegOptions::new(FfmpegFamily::Qsv),
        )
        .unwrap();
        assert!(args.ends_with(&[
            "-bf".to_owned(),
            "0".to_owned(),
            "-global_quality".to_owned(),
            "20".to_owned(),
        ]));
        let qp = config.with_rate_control(RateControl::constant_qp(30));
        assert!(matches!(
            codec_args(&qp, &FfmpegOptions::new(FfmpegFamily::VideoToolbox)),
            Err(Error::Unsupported { .. })
        ));
    }
}
