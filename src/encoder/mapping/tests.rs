use super::*;
use crate::encoder::{Bitrate, EncoderConfig, Preset, Tune};

fn configs() -> [(EncoderConfig, usize); 3] {
    let base = EncoderConfig::new(64, 64);
    [
        (
            base.clone()
                .with_rate_control(RateControl::cbr(Bitrate::from_bps(2_000_000))),
            0,
        ),
        (
            base.clone().with_rate_control(RateControl::vbr(
                Bitrate::from_bps(2_000_000),
                Bitrate::from_bps(3_000_000),
            )),
            1,
        ),
        (base.with_rate_control(RateControl::constant_qp(27)), 2),
    ]
}

/// Options (`-x`) named in a table cell.
fn flags(cell: &str) -> Vec<&str> {
    cell.split(|c: char| c.is_whitespace() || c == '`')
        .filter(|t| t.starts_with('-') && t.len() > 1)
        .collect()
}

#[test]
fn readme_has_every_row_of_the_mapping_table() {
    let readme = include_str!("../../../README.md");
    let x265 = x265::README_X265_ROWS;
    for (i, row) in README_ROWS.iter().chain(README_NEUTRAL_ROWS).enumerate() {
        // The README's table has x265's column after x264's.
        assert_eq!(x265[i][0], row[0]);
        let mut cells = row.to_vec();
        cells.insert(2, x265[i][1]);
        let line = format!("| {} |", cells.join(" | "));
        assert!(
            readme.lines().any(|l| l.trim() == line),
            "README.md lacks the mapping row\n{line}"
        );
    }
}

#[test]
fn table_rows_name_what_the_backends_are_given() {
    let codecs = [
        (3, FfmpegFamily::Nvenc),
        (4, FfmpegFamily::Qsv),
        (5, FfmpegFamily::VideoToolbox),
        (6, FfmpegFamily::Vaapi),
    ];
    for (config, row) in configs() {
        let row = README_ROWS[row];
        let nv = nvenc(&config);
        assert!(row[2].contains(nv.mode.name()), "{:?} vs {}", nv, row[2]);
        let x = x264(&config);
        let method = match x.method {
            X264Method::Abr => "ABR",
            X264Method::Cqp(_) => "CQP",
            X264Method::Crf(_) => "CRF",
        };
        assert!(
            row[1].contains(&format!("`i_rc_method` {method}")),
            "{row:?}"
        );
        for (col, codec) in codecs {
            match ffmpeg(codec, &config) {
                Ok(args) => {
                    let given: Vec<&str> = args
                        .iter()
                        .map(String::as_str)
                        .filter(|a| a.starts_with('-'))
                        .collect();
                    assert_eq!(flags(row[col]), given, "{codec:?}: {}", row[col]);
                }
                Err(Error::Unsupported { .. }) => {
                    assert!(row[col].contains("Unsupported"), "{codec:?}")
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
}

#[test]
fn rates_and_buffers_carry_their_values() {
    let config = EncoderConfig::new(64, 64).with_rate_control(
        RateControl::vbr(Bitrate::from_bps(2_500_000), Bitrate::from_bps(4_000_000))
            .with_vbv_buffer_bits(3_000_000),
    );
    let x = x264(&config);
    assert_eq!(
        (x.bitrate_kbps, x.vbv_max_kbps, x.vbv_buffer_kbit),
        (2_500, 4_000, 3_000)
    );
    let nv = nvenc(&config);
    assert_eq!(
        (
            nv.average_bps,
            nv.max_bps,
            nv.vbv_buffer_bits,
            nv.vbv_initial_delay_bits
        ),
        (2_500_000, 4_000_000, 3_000_000, 2_700_000)
    );
    let args = ffmpeg(FfmpegFamily::Libx264, &config).unwrap();
    assert_eq!(
        args,
        ["-b:v", "2500000", "-maxrate", "4000000", "-bufsize", "3000000"]
    );
    // The default VBV: one second at the target (CBR) or at the maximum (VBR).
    let cbr = EncoderConfig::new(64, 64)
        .with_rate_control(RateControl::cbr(Bitrate::from_bps(2_000_000)));
    assert_eq!(nvenc(&cbr).vbv_buffer_bits, 2_000_000);
    assert_eq!(x264(&cbr).vbv_buffer_kbit, 2_000);
    let cq = EncoderConfig::new(64, 64).with_crf(23.4);
    assert_eq!(nvenc(&cq).target_quality, 23);
    assert_eq!(x264(&cq).method, X264Method::Crf(23.4));
    assert_eq!(target_quality(0.0), 1);
    assert_eq!(target_quality(51.0), 51);
}

/// `-flag value` pairs written in a table cell (inside backticks).
fn pairs(cell: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for code in cell.split('`').skip(1).step_by(2) {
        let words: Vec<&str> = code.split_whitespace().collect();
        for w in words.windows(2) {
            if w[0].starts_with('-') && w[0].len() > 1 && !w[1].starts_with('-') {
                out.push((w[0].to_owned(), w[1].to_owned()));
            }
        }
    }
    out
}

fn has_pair(args: &[String], (flag, value): &(String, String)) -> bool {
    args.windows(2).any(|w| &w[0] == flag && &w[1] == value)
}

const FFMPEG_COLUMNS: [(usize, FfmpegFamily); 4] = [
    (3, FfmpegFamily::Nvenc),
    (4, FfmpegFamily::Qsv),
    (5, FfmpegFamily::VideoToolbox),
    (6, FfmpegFamily::Vaapi),
];

#[test]
fn preset_row_is_what_the_backends_are_given() {
    let row = README_NEUTRAL_ROWS[0];
    let groups: Vec<Vec<Preset>> = row[0]
        .trim_start_matches("`preset` ")
        .split(" / ")
        .map(|g| g.split(", ").map(|p| p.parse().unwrap()).collect())
        .collect();
    let numbers: Vec<&str> = row[2].split(" / ").collect();
    assert_eq!(groups.len(), numbers.len());
    let mut seen = 0;
    for (group, number) in groups.iter().zip(&numbers) {
        for &preset in group {
            seen += 1;
            assert_eq!(
                format!("P{}", nvenc_preset_number(preset)),
                *number,
                "{preset}"
            );
            let config = EncoderConfig::new(64, 64).with_preset(preset);
            let nv = ffmpeg_tuning(FfmpegFamily::Nvenc, &config);
            assert!(
                has_pair(&nv, &("-preset".into(), number.to_lowercase())),
                "{nv:?}"
            );
            let qsv = ffmpeg_tuning(FfmpegFamily::Qsv, &config);
            let expected = match preset.name() {
                "ultrafast" | "superfast" => "veryfast",
                "placebo" => "veryslow",
                other => other,
            };
            assert!(row[4].contains("ultrafast, superfast → veryfast; placebo → veryslow"));
            assert!(
                has_pair(&qsv, &("-preset".into(), expected.into())),
                "{qsv:?}"
            );
            for encoder in [FfmpegFamily::VideoToolbox, FfmpegFamily::Vaapi] {
                let args = ffmpeg_tuning(encoder, &config);
                assert!(
                    !args.iter().any(|a| a == "-preset"),
                    "{encoder:?}: {args:?}"
                );
            }
        }
    }
    assert_eq!(seen, Preset::NAMES.len(), "the row names every preset once");
}

#[test]
fn tune_rows_are_what_the_backends_are_given() {
    let zero = EncoderConfig::new(64, 64)
        .with_bframes(Some(3))
        .with_tune(Some(Tune::Zerolatency));
    let row = README_NEUTRAL_ROWS[1];
    assert!(row[2].contains("no B-frames") && row[2].contains("ultra-low-latency"));
    assert_eq!(bframes(&zero), Some(0));
    assert_eq!(nvenc_tuning_name(zero.tune), "ull");
    for (col, encoder) in FFMPEG_COLUMNS {
        let args = ffmpeg_tuning(encoder, &zero);
        let written = pairs(row[col]);
        assert!(!written.is_empty(), "{encoder:?}");
        for pair in &written {
            assert!(
                has_pair(&args, pair),
                "{encoder:?}: {pair:?} not in {args:?}"
            );
        }
    }
    let row = README_NEUTRAL_ROWS[2];
    assert!(row[2].contains("low-latency / high-quality"));
    assert_eq!(nvenc_tuning_name(Some(Tune::Fastdecode)), "ll");
    assert_eq!(nvenc_tuning_name(None), "hq");
    assert_eq!(nvenc_tuning_name(Some(Tune::Film)), "hq");
    assert_eq!(row[3], "`-tune ll` / `hq`");
    let config = EncoderConfig::new(64, 64).with_tune(Some(Tune::Fastdecode));
    assert!(has_pair(
        &ffmpeg_tuning(FfmpegFamily::Nvenc, &config),
        &("-tune".into(), "ll".into())
    ));
    for (_, encoder) in &FFMPEG_COLUMNS[1..] {
        assert!(!ffmpeg_tuning(*encoder, &config)
            .iter()
            .any(|a| a == "-tune"));
    }
    // Without zero latency the B-frames are the configuration's.
    assert_eq!(bframes(&zero.with_tune(None)), Some(3));
}

#[test]
fn crf_row_is_what_the_backends_are_given() {
    let row = README_NEUTRAL_ROWS[3];
    let config = EncoderConfig::new(64, 64).with_crf(20.4);
    assert!(row[2].contains("round(c)") && row[2].contains("1..=51"));
    assert_eq!(nvenc(&config).target_quality, 20);
    for (col, encoder) in FFMPEG_COLUMNS {
        let args = ffmpeg(encoder, &config).unwrap();
        let given: Vec<&str> = args
            .iter()
            .map(String::as_str)
            .filter(|a| a.starts_with('-'))
            .collect();
        assert_eq!(flags(row[col]), given, "{encoder:?}: {}", row[col]);
        let value = args.last().unwrap();
        let expected = if encoder == FfmpegFamily::VideoToolbox {
            "59" // 100 - 2 x 20.4, rounded
        } else {
            "20" // round(20.4)
        };
        assert_eq!(value, expected, "{encoder:?}");
    }
    assert!(row[1].contains("--crf"));
    assert_eq!(x264(&config).method, X264Method::Crf(20.4));
}

/// `field` = ... = expression assignments of a table cell (`averageBitRate` = `maxBitRate` = b,
/// `vbvInitialDelay` = 0.9 v, `i_vbv_buffer_size` = v (kbit)): each field with its expression.
fn assignments(cell: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for part in cell.split(", ") {
        let Some((names, expr)) = part.rsplit_once(" = ") else {
            continue;
        };
        for name in names.split('`').skip(1).step_by(2) {
            out.push((name.to_owned(), expr.to_owned()));
        }
    }
    out
}

/// The value of a table expression: a symbol (`b`, `m`, `v`, `q`), optionally after a factor
/// (`0.9 v`); the words after it (`(kbit)`, `for I, P and B`) are units and prose.
fn eval(expr: &str, symbol: &dyn Fn(&str) -> f64) -> f64 {
    let words: Vec<&str> = expr.split_whitespace().collect();
    match words.as_slice() {
        [factor, sym, ..] if factor.parse::<f64>().is_ok() => {
            factor.parse::<f64>().unwrap_or(f64::NAN) * symbol(sym)
        }
        [sym, ..] => symbol(sym),
        [] => f64::NAN,
    }
}

/// The rate-control rows carry values, not only names: with the target `b`, the maximum `m`,
/// the VBV `v` and the QP `q` all different, every `-flag value` pair and every `field = value`
/// the README names is what the backend is given. Checked against two breakages that the
/// name-only test above let through: `h264_nvenc` VBR with `-b:v` and `-maxrate` swapped, and
/// NVENC CBR's `vbvInitialDelay` at half the buffer instead of nine tenths.
#[test]
fn rate_rows_carry_the_values_they_name() {
    const B: u64 = 2_000_000;
    const M: u64 = 3_000_000;
    const V: u64 = 1_500_000;
    const Q: u8 = 27;
    let symbol = |s: &str| -> f64 {
        match s {
            "b" => B as f64,
            "m" => M as f64,
            "v" => V as f64,
            "q" => f64::from(Q),
            other => panic!("the table uses {other:?}, which this test does not know"),
        }
    };
    let rows = [
        (
            0,
            RateControl::cbr(Bitrate::from_bps(B)).with_vbv_buffer_bits(V),
        ),
        (
            1,
            RateControl::vbr(Bitrate::from_bps(B), Bitrate::from_bps(M)).with_vbv_buffer_bits(V),
        ),
        (2, RateControl::constant_qp(Q)),
    ];
    for (index, rc) in rows {
        let row = README_ROWS[index];
        let config = EncoderConfig::new(64, 64).with_rate_control(rc);

        let mut checked = 0;
        for (col, codec) in FFMPEG_COLUMNS {
            let Ok(args) = ffmpeg(codec, &config) else {
                continue; // the refusal is checked by table_rows_name_what_the_backends_are_given
            };
            for (flag, sym) in pairs(row[col]) {
                let want = if sym.len() == 1 && sym.chars().all(|c| c.is_ascii_lowercase()) {
                    format!("{}", symbol(&sym))
                } else {
                    sym.clone()
                };
                assert!(
                    has_pair(&args, &(flag.clone(), want.clone())),
                    "{codec:?} {}: {flag} {want} not in {args:?}",
                    row[0]
                );
                checked += 1;
            }
        }

        let nv = nvenc(&config);
        for (field, expr) in assignments(row[2]) {
            let got = match field.as_str() {
                "averageBitRate" => nv.average_bps,
                "maxBitRate" => nv.max_bps,
                "vbvBufferSize" => nv.vbv_buffer_bits,
                "vbvInitialDelay" => nv.vbv_initial_delay_bits,
                "constQP" => u32::from(nv.const_qp),
                other => panic!("NVENC field {other} is not checked by this test"),
            };
            let want = eval(&expr, &symbol);
            assert_eq!(f64::from(got), want.round(), "NVENC {field} = {expr}");
            checked += 1;
        }

        let x = x264(&config);
        for (field, expr) in assignments(row[1]) {
            let (got, scale) = match field.as_str() {
                "i_bitrate" => (x.bitrate_kbps, 1000.0),
                "i_vbv_max_bitrate" => (x.vbv_max_kbps, 1000.0),
                "i_vbv_buffer_size" => (x.vbv_buffer_kbit, 1000.0),
                "i_qp_constant" => match x.method {
                    X264Method::Cqp(q) => (u32::from(q), 1.0),
                    other => panic!("{other:?} where the table says CQP"),
                },
                other => panic!("x264 field {other} is not checked by this test"),
            };
            let want = eval(&expr, &symbol) / scale;
            assert_eq!(f64::from(got), want.round(), "x264 {field} = {expr}");
            checked += 1;
        }
        assert!(checked >= 4, "{}: only {checked} values checked", row[0]);
    }
}

/// The README's statement that FFmpeg's HEVC encoders of the hardware families take the same
/// arguments as their H.264 counterparts (only `-c:v` differs): checked for every rate control,
/// preset, tune and B-frame setting of the tables above.
#[test]
fn hevc_encoders_of_a_hardware_family_take_the_h264_arguments() {
    let mut settings: Vec<EncoderConfig> = configs().into_iter().map(|(c, _)| c).collect();
    let base = EncoderConfig::new(64, 64);
    for preset in [Preset::Ultrafast, Preset::Medium, Preset::Placebo] {
        settings.push(base.clone().with_preset(preset));
    }
    for tune in [Tune::Zerolatency, Tune::Fastdecode, Tune::Film] {
        settings.push(base.clone().with_tune(Some(tune)));
    }
    settings.push(base.clone().with_bframes(Some(3)).with_crf(30.0));
    for family in [
        FfmpegFamily::Nvenc,
        FfmpegFamily::Qsv,
        FfmpegFamily::VideoToolbox,
        FfmpegFamily::Vaapi,
    ] {
        for h264 in &settings {
            let hevc = h264.clone().with_codec(crate::encoder::Codec::Hevc);
            assert_eq!(
                ffmpeg_tuning(family, &hevc),
                ffmpeg_tuning(family, h264),
                "{family:?}"
            );
            assert_eq!(
                ffmpeg(family, &hevc).map_err(|e| e.to_string()),
                ffmpeg(family, h264).map_err(|e| e.to_string()),
                "{family:?}"
            );
        }
    }
}

/// FFmpeg's libx265 is given x265's names: the preset as it is, x264's tunes that x265 has,
/// none for `film` and `stillimage`, and x265's own log level.
#[test]
fn ffmpeg_libx265_is_given_x265_names() {
    let config = EncoderConfig::new(64, 64).with_codec(crate::encoder::Codec::Hevc);
    let args = ffmpeg_tuning(
        FfmpegFamily::Libx265,
        &config.clone().with_tune(Some(Tune::Film)),
    );
    assert!(!args.contains(&"-tune".to_owned()), "{args:?}");
    assert!(
        args.windows(2)
            .any(|w| w == ["-x265-params", "log-level=error:open-gop=0"]),
        "{args:?}"
    );
    let args = ffmpeg_tuning(
        FfmpegFamily::Libx265,
        &config
            .clone()
            .with_preset(Preset::Slow)
            .with_tune(Some(Tune::Grain)),
    );
    assert!(
        args.windows(2).any(|w| w == ["-preset", "slow"]),
        "{args:?}"
    );
    assert!(args.windows(2).any(|w| w == ["-tune", "grain"]), "{args:?}");
    let threads = ffmpeg_tuning(FfmpegFamily::Libx265, &config.clone().with_threads(3));
    assert!(
        threads
            .windows(2)
            .any(|w| w == ["-x265-params", "log-level=error:open-gop=0:pools=3"]),
        "{threads:?}"
    );
    let qp = ffmpeg(
        FfmpegFamily::Libx265,
        &config.with_rate_control(RateControl::constant_qp(30)),
    )
    .unwrap();
    assert_eq!(qp, ["-qp", "30"]);
}
