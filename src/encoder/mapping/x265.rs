//! The x265 mapping: what the in-process libx265 backend (`src/x265/`) sets in `x265_param` for
//! an [`EncoderConfig`], and [`README_X265_ROWS`], the x265 column of the README's mapping table,
//! checked against it below.
//!
//! x265 names its presets and its rate-control fields as x264 does, so the mapping is x264's
//! with x265's field names: the same preset name, the tune through [`super::x265_tune`], the CRF
//! as `rc.rfConstant`, CBR and VBR as average bit rate with a VBV, constant QP as `rc.qp`, the
//! GOP as `keyframeMax`, the B-frames from [`super::bframes`], and the thread count as the size of
//! x265's thread pool.

use super::{bframes, x265_tune};
use crate::encoder::EncoderConfig;

/// x265's rate-control method (`rc.rateControlMode`): x264's methods under the same names
/// (`X265_RC_CRF` with `rc.rfConstant`, `X265_RC_ABR` with `rc.bitrate` and the VBV,
/// `X265_RC_CQP` with `rc.qp`), so one mapping serves both.
#[cfg_attr(not(feature = "x265"), allow(dead_code))] // read by the x265 backend
pub(crate) type X265Method = super::X264Method;

/// x265's `param.rc` fields for a configuration (`rc.bitrate`, `rc.vbvMaxBitrate` in kbit/s,
/// `rc.vbvBufferSize` in kbit): x264's, the same values under x265's field names.
#[cfg_attr(not(feature = "x265"), allow(dead_code))] // read by the x265 backend
pub(crate) type X265Rc = super::X264Rc;

/// Everything the x265 backend takes from an [`EncoderConfig`] besides the picture format.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(not(feature = "x265"), allow(dead_code))] // read by the x265 backend
pub(crate) struct X265Params {
    /// `x265_param_default_preset`'s preset: x264's name, which x265 shares (ultrafast ..
    /// placebo).
    pub(crate) preset: &'static str,
    /// `x265_param_default_preset`'s tune, where x265 has the tune ([`super::x265_tune`]).
    pub(crate) tune: Option<&'static str>,
    /// `keyframeMax`: [`EncoderConfig::gop_size`]. `keyframeMin` stays x265's automatic
    /// `min(keyframeMax / 10, fps)`, the rule x264 applies to its `i_keyint_min`.
    pub(crate) keyframe_max: u32,
    /// `bframes`, `None` keeping the preset's and tune's ([`super::bframes`]).
    pub(crate) bframes: Option<u32>,
    /// `numaPools` as one pool of this many threads (x265 then sizes `frameNumThreads` from the
    /// pool), `None` for x265's automatic choice (every core): [`EncoderConfig::threads`], 0 =
    /// automatic.
    pub(crate) pool_threads: Option<u32>,
    /// The rate control.
    pub(crate) rc: X265Rc,
}

/// The x265 mapping (README table, column "x265").
#[cfg_attr(not(feature = "x265"), allow(dead_code))] // read by the x265 backend
pub(crate) fn x265_params(config: &EncoderConfig) -> X265Params {
    X265Params {
        preset: config.preset.name(),
        tune: config.tune.and_then(x265_tune),
        keyframe_max: config.gop_size,
        bframes: bframes(config),
        pool_threads: (config.threads > 0).then_some(config.threads),
        rc: x265_rc(config),
    }
}

/// The rate-control part of [`x265_params`], also what a reconfiguration sets: x264's mapping
/// ([`super::x264`]), since x265 takes the same methods, rates and VBV in the same units.
#[cfg_attr(not(feature = "x265"), allow(dead_code))] // read by the x265 backend
pub(crate) fn x265_rc(config: &EncoderConfig) -> X265Rc {
    super::x264(config)
}

/// The x265 column of the README's mapping table, cell by cell: the `EncoderConfig` cell (the
/// first cell of the table's row, to find it by) and the x265 cell. Rows: CBR, VBR, constant QP,
/// reconfigure (as in [`super::README_ROWS`]), then the preset, zerolatency, other tunes and CRF
/// (as in [`super::README_NEUTRAL_ROWS`]). `b` is the target, `m` the maximum, `v` the VBV buffer,
/// `q` the QP, `c` the CRF.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) const README_X265_ROWS: &[[&str; 2]] = &[
    [
        "`rate_control` `Cbr` (`b`, VBV `v`)",
        "`rateControlMode` ABR, `bitrate` = `vbvMaxBitrate` = b, `vbvBufferSize` = v (kbit), no filler",
    ],
    [
        "`rate_control` `Vbr` (`b`, max `m`, VBV `v`)",
        "`rateControlMode` ABR, `bitrate` = b, `vbvMaxBitrate` = m, `vbvBufferSize` = v (kbit)",
    ],
    [
        "`rate_control` `ConstantQp` (`q`, 0-51)",
        "`rateControlMode` CQP, `qp` = q",
    ],
    [
        "`reconfigure` (new `Cbr`/`Vbr` rates mid-stream)",
        "new libx265 encoder: IDR at the next frame (any mode)",
    ],
    [
        "`preset` ultrafast / superfast, veryfast / faster, fast / medium / slow / slower / veryslow, placebo",
        "same name",
    ],
    ["`tune` zerolatency", "`zerolatency`"],
    [
        "`tune` fastdecode / others",
        "same name; film, stillimage: none (x265 has neither)",
    ],
    ["`crf` c (0-51)", "`rfConstant` = c (CRF)"],
];

#[cfg(test)]
mod tests {
    use super::super::{README_NEUTRAL_ROWS, README_ROWS};
    use super::*;
    use crate::encoder::{Bitrate, Preset, RateControl, Tune};

    /// Each x265 row belongs to a row of the README table (same first cell, same order).
    #[test]
    fn x265_rows_follow_the_table_rows() {
        let first: Vec<&str> = README_ROWS
            .iter()
            .chain(README_NEUTRAL_ROWS)
            .map(|r| r[0])
            .collect();
        let ours: Vec<&str> = README_X265_ROWS.iter().map(|r| r[0]).collect();
        assert_eq!(ours, first);
    }

    /// The rate-control cells name the method and carry the values the backend is given, with
    /// the target `b`, the maximum `m`, the VBV `v` and the QP `q` all different.
    #[test]
    fn rate_cells_carry_the_values_x265_is_given() {
        let (b, m, v, q) = (2_000_000u64, 3_000_000u64, 1_500_000u64, 27u8);
        let cases = [
            (
                0,
                RateControl::cbr(Bitrate::from_bps(b)).with_vbv_buffer_bits(v),
            ),
            (
                1,
                RateControl::vbr(Bitrate::from_bps(b), Bitrate::from_bps(m))
                    .with_vbv_buffer_bits(v),
            ),
            (2, RateControl::constant_qp(q)),
        ];
        for (row, rc) in cases {
            let cell = README_X265_ROWS[row][1];
            let x = x265_rc(&EncoderConfig::new(64, 64).with_rate_control(rc));
            let method = match x.method {
                X265Method::Abr => "ABR",
                X265Method::Cqp(_) => "CQP",
                X265Method::Crf(_) => "CRF",
            };
            assert!(
                cell.contains(&format!("`rateControlMode` {method}")),
                "{cell}"
            );
            let symbol = |s: &str| match s {
                "b" => b as f64 / 1000.0,
                "m" => m as f64 / 1000.0,
                "v" => v as f64 / 1000.0,
                "q" => f64::from(q),
                other => panic!("unknown symbol {other}"),
            };
            let mut checked = 0;
            for part in cell.split(", ") {
                let Some((names, expr)) = part.rsplit_once(" = ") else {
                    continue;
                };
                let sym = expr.split_whitespace().next().unwrap();
                for name in names.split('`').skip(1).step_by(2) {
                    let got = match name {
                        "bitrate" => x.bitrate_kbps,
                        "vbvMaxBitrate" => x.vbv_max_kbps,
                        "vbvBufferSize" => x.vbv_buffer_kbit,
                        "qp" => match x.method {
                            X265Method::Cqp(q) => u32::from(q),
                            other => panic!("{other:?} where the table says CQP"),
                        },
                        other => panic!("x265 field {other} is not checked by this test"),
                    };
                    assert_eq!(f64::from(got), symbol(sym), "{name} = {expr}");
                    checked += 1;
                }
            }
            assert!(checked >= 1, "{cell}");
        }
        // Constant quality: the CRF itself, no VBV.
        let cq = x265_rc(&EncoderConfig::new(64, 64).with_crf(20.5));
        assert_eq!(cq.method, X265Method::Crf(20.5));
        assert_eq!(
            (cq.bitrate_kbps, cq.vbv_max_kbps, cq.vbv_buffer_kbit),
            (0, 0, 0)
        );
        assert!(README_X265_ROWS[7][1].contains("`rfConstant` = c"));
        // The default VBV of CBR: one second at the target.
        let cbr = EncoderConfig::new(64, 64)
            .with_rate_control(RateControl::cbr(Bitrate::from_bps(2_000_000)));
        assert_eq!(x265_rc(&cbr).vbv_buffer_kbit, 2_000);
    }

    #[test]
    fn preset_tune_gop_bframes_and_threads_reach_x265() {
        for name in Preset::NAMES {
            let preset: Preset = name.parse().unwrap();
            let p = x265_params(&EncoderConfig::new(64, 64).with_preset(preset));
            assert_eq!(p.preset, *name);
        }
        let config = EncoderConfig::new(64, 64)
            .with_gop_size(48)
            .with_bframes(Some(2))
            .with_threads(3);
        let p = x265_params(&config);
        assert_eq!(
            (p.keyframe_max, p.bframes, p.pool_threads, p.tune),
            (48, Some(2), Some(3), None)
        );
        let auto = x265_params(&EncoderConfig::new(64, 64));
        assert_eq!((auto.bframes, auto.pool_threads), (None, None));
        // Zero latency means no B-frames, as on every backend.
        let zero = x265_params(&EncoderConfig::new(64, 64).with_tune(Some(Tune::Zerolatency)));
        assert_eq!((zero.tune, zero.bframes), (Some("zerolatency"), Some(0)));
        for (tune, want) in [
            (Tune::Film, None),
            (Tune::Stillimage, None),
            (Tune::Animation, Some("animation")),
            (Tune::Grain, Some("grain")),
            (Tune::Psnr, Some("psnr")),
            (Tune::Ssim, Some("ssim")),
            (Tune::Fastdecode, Some("fastdecode")),
        ] {
            let p = x265_params(&EncoderConfig::new(64, 64).with_tune(Some(tune)));
            assert_eq!(p.tune, want, "{tune:?}");
            let cell = README_X265_ROWS[6][1];
            match want {
                None => assert!(cell.contains(tune.name()), "{cell}"),
                Some(_) => assert!(cell.starts_with("same name")),
            }
        }
    }
}
