//! [`RateControl`]: how an encoder spends bits.

use std::fmt;

use super::error::{ConfigError, RateControlMode};
use super::units::Bitrate;

/// How an encoder spends bits: one neutral setting that every backend maps onto its own (see
/// the README's mapping table, and `src/encoder/mapping.rs`, the one place that does it).
///
/// The VBV (HRD) buffer bounds how far the rate may stray from the target over short windows.
/// Left as `None` it defaults to one second at the target rate for CBR and one second at the
/// maximum rate for VBR ([`RateControl::vbv_buffer_bits`]); every backend is then given this
/// value, so no backend's own default applies (for the record: x264 has no VBV unless one is
/// set, NVENC's `vbvBufferSize = 0` leaves the size to the driver, and FFmpeg's `h264_nvenc`
/// uses two seconds at the target when `-bufsize` is absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum RateControl {
    /// Constant quality at [`EncoderConfig::crf`](super::EncoderConfig::crf) (x264's CRF; NVENC's
    /// constant-quality VBR).
    /// The default.
    #[default]
    ConstantQuality,
    /// Constant bit rate: the stream averages `bitrate` and the VBV never overflows at it.
    Cbr {
        /// Target (and maximum) rate.
        bitrate: Bitrate,
        /// VBV buffer in bits; `None` for one second at `bitrate`.
        vbv_buffer_bits: Option<u64>,
    },
    /// Variable bit rate: averages `bitrate`, never above `max_bitrate` over the VBV buffer.
    Vbr {
        /// Average rate.
        bitrate: Bitrate,
        /// Peak rate, at least `bitrate`.
        max_bitrate: Bitrate,
        /// VBV buffer in bits; `None` for one second at `max_bitrate`.
        vbv_buffer_bits: Option<u64>,
    },
    /// Every picture at the same quantizer, 0 to 51 (0 is lossless on x264). No rate control.
    ConstantQp {
        /// The QP of every picture (NVENC: I, P and B alike).
        qp: u8,
    },
}

impl RateControl {
    /// Highest accepted QP (8-bit H.264).
    pub const QP_MAX: u8 = 51;
    /// Smallest accepted VBV buffer, in bits (x264 counts in kbit).
    pub const VBV_MIN_BITS: u64 = 1_000;
    /// Largest accepted VBV buffer, in bits (NVENC's field is 32-bit).
    pub const VBV_MAX_BITS: u64 = u32::MAX as u64;

    /// Constant bit rate at `bitrate`, with the default VBV buffer.
    #[must_use]
    pub const fn cbr(bitrate: Bitrate) -> Self {
        RateControl::Cbr {
            bitrate,
            vbv_buffer_bits: None,
        }
    }

    /// Variable bit rate averaging `bitrate`, peaking at `max_bitrate`, default VBV buffer.
    #[must_use]
    pub const fn vbr(bitrate: Bitrate, max_bitrate: Bitrate) -> Self {
        RateControl::Vbr {
            bitrate,
            max_bitrate,
            vbv_buffer_bits: None,
        }
    }

    /// Constant QP.
    #[must_use]
    pub const fn constant_qp(qp: u8) -> Self {
        RateControl::ConstantQp { qp }
    }

    /// Sets the VBV buffer of a CBR or VBR setting; the other modes have no VBV and are
    /// returned unchanged ([`RateControl::from_parts`] refuses a buffer for them instead).
    #[must_use]
    pub const fn with_vbv_buffer_bits(self, bits: u64) -> Self {
        match self {
            RateControl::Cbr { bitrate, .. } => RateControl::Cbr {
                bitrate,
                vbv_buffer_bits: Some(bits),
            },
            RateControl::Vbr {
                bitrate,
                max_bitrate,
                ..
            } => RateControl::Vbr {
                bitrate,
                max_bitrate,
                vbv_buffer_bits: Some(bits),
            },
            other => other,
        }
    }

    /// The mode's name.
    #[must_use]
    pub const fn mode(self) -> RateControlMode {
        match self {
            RateControl::ConstantQuality => RateControlMode::Cq,
            RateControl::Cbr { .. } => RateControlMode::Cbr,
            RateControl::Vbr { .. } => RateControlMode::Vbr,
            RateControl::ConstantQp { .. } => RateControlMode::Cqp,
        }
    }

    /// The target bit rate, for CBR and VBR.
    #[must_use]
    pub const fn bitrate(self) -> Option<Bitrate> {
        match self {
            RateControl::Cbr { bitrate, .. } | RateControl::Vbr { bitrate, .. } => Some(bitrate),
            _ => None,
        }
    }

    /// The peak rate: the target for CBR, the maximum for VBR.
    #[must_use]
    pub const fn max_bitrate(self) -> Option<Bitrate> {
        match self {
            RateControl::Cbr { bitrate, .. } => Some(bitrate),
            RateControl::Vbr { max_bitrate, .. } => Some(max_bitrate),
            _ => None,
        }
    }

    /// The VBV buffer every backend is given, in bits: the one set, or one second at the peak
    /// rate. `None` for the modes without a VBV.
    #[must_use]
    pub const fn vbv_buffer_bits(self) -> Option<u64> {
        match self {
            RateControl::Cbr {
                vbv_buffer_bits: Some(bits),
                ..
            }
            | RateControl::Vbr {
                vbv_buffer_bits: Some(bits),
                ..
            } => Some(bits),
            RateControl::Cbr { bitrate, .. } => Some(bitrate.bps()),
            RateControl::Vbr { max_bitrate, .. } => Some(max_bitrate.bps()),
            _ => None,
        }
    }

    /// Builds a setting from command-line style parts (`--rc`, `--bitrate`, `--maxrate`,
    /// `--bufsize`, `--qp`). `mode` `None` picks CBR when only a bit rate is given, VBR when a
    /// maximum is given too, constant QP when a QP is given, constant quality otherwise.
    ///
    /// # Errors
    /// [`ConfigError::RateControlMissingValue`] when the mode needs a value that is absent,
    /// [`ConfigError::RateControlExtraValue`] when a value does not apply to the mode (it would
    /// be silently ignored otherwise), [`ConfigError::QpOutOfRange`] for a QP above 51; the
    /// ranges are checked by [`RateControl::validate`].
    pub fn from_parts(
        mode: Option<RateControlMode>,
        bitrate: Option<Bitrate>,
        max_bitrate: Option<Bitrate>,
        vbv_buffer_bits: Option<u64>,
        qp: Option<u32>,
    ) -> Result<Self, ConfigError> {
        let mode = mode.unwrap_or(match (bitrate, max_bitrate, qp) {
            (_, _, Some(_)) => RateControlMode::Cqp,
            (Some(_), Some(_), _) => RateControlMode::Vbr,
            (Some(_), None, _) => RateControlMode::Cbr,
            _ => RateControlMode::Cq,
        });
        let missing = |value: &'static str| ConfigError::RateControlMissingValue { mode, value };
        let extra = |value: &'static str| ConfigError::RateControlExtraValue { mode, value };
        let rc = match mode {
            RateControlMode::Cq | RateControlMode::Cqp => {
                if bitrate.is_some() {
                    return Err(extra("bitrate"));
                }
                if max_bitrate.is_some() {
                    return Err(extra("maxrate"));
                }
                if vbv_buffer_bits.is_some() {
                    return Err(extra("bufsize"));
                }
                if mode == RateControlMode::Cq {
                    if qp.is_some() {
                        return Err(extra("qp"));
                    }
                    RateControl::ConstantQuality
                } else {
                    let qp = qp.ok_or_else(|| missing("qp"))?;
                    let qp = u8::try_from(qp).ok().filter(|q| *q <= Self::QP_MAX).ok_or(
                        ConfigError::QpOutOfRange {
                            qp,
                            max: Self::QP_MAX,
                        },
                    )?;
                    RateControl::ConstantQp { qp }
                }
            }
            RateControlMode::Cbr => {
                if qp.is_some() {
                    return Err(extra("qp"));
                }
                let bitrate = bitrate.ok_or_else(|| missing("bitrate"))?;
                // A maximum equal to the target is what CBR means; any other is a mistake.
                if max_bitrate.is_some_and(|m| m != bitrate) {
                    return Err(extra("maxrate"));
                }
                RateControl::Cbr {
                    bitrate,
                    vbv_buffer_bits,
                }
            }
            RateControlMode::Vbr => {
                if qp.is_some() {
                    return Err(extra("qp"));
                }
                RateControl::Vbr {
                    bitrate: bitrate.ok_or_else(|| missing("bitrate"))?,
                    max_bitrate: max_bitrate.ok_or_else(|| missing("maxrate"))?,
                    vbv_buffer_bits,
                }
            }
        };
        rc.validate()?;
        Ok(rc)
    }

    /// Checks the values: bit rates within [`Bitrate::MIN`]..=[`Bitrate::MAX`], a maximum at
    /// least the target, a VBV buffer within [`RateControl::VBV_MIN_BITS`]..=
    /// [`RateControl::VBV_MAX_BITS`], a QP of at most 51.
    ///
    /// # Errors
    /// The first bad value, as a [`ConfigError`] naming it and the valid range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check_rate = |what: &'static str, rate: Bitrate| {
            if (Bitrate::MIN..=Bitrate::MAX).contains(&rate) {
                Ok(())
            } else {
                Err(ConfigError::BitrateOutOfRange {
                    what,
                    bps: rate.bps(),
                    min: Bitrate::MIN.bps(),
                    max: Bitrate::MAX.bps(),
                })
            }
        };
        match *self {
            RateControl::ConstantQuality => {}
            RateControl::ConstantQp { qp } => {
                if qp > Self::QP_MAX {
                    return Err(ConfigError::QpOutOfRange {
                        qp: u32::from(qp),
                        max: Self::QP_MAX,
                    });
                }
            }
            RateControl::Cbr { bitrate, .. } => check_rate("bitrate", bitrate)?,
            RateControl::Vbr {
                bitrate,
                max_bitrate,
                ..
            } => {
                check_rate("bitrate", bitrate)?;
                check_rate("max bitrate", max_bitrate)?;
                if max_bitrate < bitrate {
                    return Err(ConfigError::MaxBitrateBelowTarget {
                        max_bps: max_bitrate.bps(),
                        target_bps: bitrate.bps(),
                    });
                }
            }
        }
        if let Some(bits) = self.vbv_buffer_bits() {
            if !(Self::VBV_MIN_BITS..=Self::VBV_MAX_BITS).contains(&bits) {
                return Err(ConfigError::VbvBufferOutOfRange {
                    bits,
                    min: Self::VBV_MIN_BITS,
                    max: Self::VBV_MAX_BITS,
                });
            }
        }
        Ok(())
    }
}

impl fmt::Display for RateControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RateControl::ConstantQuality => f.write_str("constant quality")?,
            RateControl::ConstantQp { qp } => write!(f, "constant QP {qp}")?,
            RateControl::Cbr { bitrate, .. } => write!(f, "CBR {bitrate}")?,
            RateControl::Vbr {
                bitrate,
                max_bitrate,
                ..
            } => write!(f, "VBR {bitrate} max {max_bitrate}")?,
        }
        if let Some(bits) = self.vbv_buffer_bits() {
            write!(f, " VBV {}", Bitrate(bits))?;
        }
        Ok(())
    }
}
