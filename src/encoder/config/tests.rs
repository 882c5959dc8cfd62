use super::*;

#[test]
fn parses_sizes_rates_and_names() {
    assert_eq!("1920x1080".parse(), Ok(Resolution::new(1920, 1080)));
    assert!(matches!(
        "1920*1080".parse::<Resolution>(),
        Err(ConfigError::BadResolutionSyntax { .. })
    ));
    assert_eq!("30".parse(), Ok(FrameRate::new(30, 1)));
    assert_eq!("30000/1001".parse(), Ok(FrameRate::new(30000, 1001)));
    assert_eq!("29.97".parse(), Ok(FrameRate::new(2997, 100)));
    assert!(matches!(
        "fast".parse::<FrameRate>(),
        Err(ConfigError::BadFrameRateSyntax { .. })
    ));
    assert_eq!("VeryFast".parse(), Ok(Preset::Veryfast));
    assert_eq!("zerolatency".parse(), Ok(Tune::Zerolatency));
    assert_eq!("yuv420p".parse(), Ok(PixelFormat::I420));
    assert_eq!("NV12".parse(), Ok(PixelFormat::Nv12));
    match "p4".parse::<Preset>() {
        Err(ConfigError::UnknownPreset { name, valid }) => {
            assert_eq!(name, "p4");
            assert!(valid.contains(&"medium"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        "rgb24".parse::<PixelFormat>(),
        Err(ConfigError::UnknownPixelFormat { .. })
    ));
}

#[test]
fn parses_bitrates_and_builds_rate_control() {
    assert_eq!("2M".parse(), Ok(Bitrate::from_bps(2_000_000)));
    assert_eq!("2.5M".parse(), Ok(Bitrate::from_bps(2_500_000)));
    assert_eq!("2500k".parse(), Ok(Bitrate::from_kbps(2_500)));
    assert_eq!("2500K".parse(), Ok(Bitrate::from_bps(2_500_000)));
    assert_eq!("2000000".parse(), Ok(Bitrate::from_bps(2_000_000)));
    assert_eq!(Bitrate::from_bps(2_500_000).to_string(), "2500k");
    assert_eq!(Bitrate::from_bps(2_000_000).to_string(), "2M");
    for bad in [
        "",
        "M",
        "2G",
        "-1M",
        "1.5",
        "2.M",
        "1.2345k",
        "99999999999999999999",
    ] {
        assert!(
            matches!(
                bad.parse::<Bitrate>(),
                Err(ConfigError::BadBitrateSyntax { .. })
            ),
            "{bad:?}"
        );
    }
    let m = |v: u64| Some(Bitrate::from_bps(v * 1_000_000));
    assert_eq!(
        RateControl::from_parts(None, m(2), None, None, None),
        Ok(RateControl::cbr(Bitrate::from_bps(2_000_000)))
    );
    assert_eq!(
        RateControl::from_parts(None, m(2), m(3), Some(1_500_000), None),
        Ok(
            RateControl::vbr(Bitrate::from_bps(2_000_000), Bitrate::from_bps(3_000_000))
                .with_vbv_buffer_bits(1_500_000)
        )
    );
    assert_eq!(
        RateControl::from_parts(Some(RateControlMode::Cqp), None, None, None, Some(30)),
        Ok(RateControl::constant_qp(30))
    );
    assert_eq!(
        RateControl::from_parts(None, None, None, None, None),
        Ok(RateControl::ConstantQuality)
    );
    assert!(matches!(
        RateControl::from_parts(Some(RateControlMode::Vbr), m(2), None, None, None),
        Err(ConfigError::RateControlMissingValue {
            value: "maxrate",
            ..
        })
    ));
    assert!(matches!(
        RateControl::from_parts(Some(RateControlMode::Cq), m(2), None, None, None),
        Err(ConfigError::RateControlExtraValue {
            value: "bitrate",
            ..
        })
    ));
    assert!(matches!(
        RateControl::from_parts(Some(RateControlMode::Cqp), None, None, None, Some(300)),
        Err(ConfigError::QpOutOfRange { qp: 300, max: 51 })
    ));
    assert!(matches!(
        "abr".parse::<RateControlMode>(),
        Err(ConfigError::UnknownRateControl { .. })
    ));
    // The default VBV: one second at the target (CBR) or the maximum (VBR).
    assert_eq!(
        RateControl::cbr(Bitrate::from_bps(2_000_000)).vbv_buffer_bits(),
        Some(2_000_000)
    );
    let err = EncoderConfig::new(64, 64)
        .with_rate_control(RateControl::vbr(
            Bitrate::from_bps(3_000_000),
            Bitrate::from_bps(2_000_000),
        ))
        .validate()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "max bitrate 2000000 bit/s is below the target bitrate 3000000 bit/s: the maximum \
         must be at least the target"
    );
    let err = RateControl::cbr(Bitrate::from_bps(500))
        .validate()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "bitrate 500 bit/s is out of range: expected 1000 to 4294967295 bit/s"
    );
}

#[test]
fn plane_layouts_cover_the_frame_exactly() {
    for format in [PixelFormat::I420, PixelFormat::Nv12] {
        let layout = format.plane_layout(Resolution::new(6, 4)).unwrap();
        assert_eq!(layout.frame_len, 36);
        let last = layout.planes.last().unwrap();
        assert_eq!(last.offset + last.stride * last.rows, 36, "{format}");
    }
}

#[test]
fn error_messages_name_value_and_valid_range() {
    let err = EncoderConfig::new(320, 240)
        .with_crf(60.0)
        .validate()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "crf 60 is out of range: expected 0 to 51 (lower is better quality)"
    );
    let err = EncoderConfig::new(7, 8).validate().unwrap_err();
    assert!(err.to_string().contains("try 8x8"), "{err}");
}

/// B-frames with the `zerolatency` tune are a typed error naming both and what would be valid;
/// `bframes` 0 or unset stays valid with it, and B-frames with any other tune are fine. Checked
/// against `validate` without the check (the B-frames were then dropped in silence by
/// `mapping::bframes`).
#[test]
fn bframes_with_zerolatency_are_refused_not_dropped() {
    let zero = EncoderConfig::new(64, 64).with_tune(Some(Tune::Zerolatency));
    let err = zero.clone().with_bframes(Some(2)).validate().unwrap_err();
    assert_eq!(err, ConfigError::BframesWithZeroLatency { bframes: 2 });
    let text = err.to_string();
    assert!(
        text.contains("bframes 2 with tune zerolatency")
            && text.contains("without B-frames")
            && text.contains("choose another tune"),
        "{text}"
    );
    assert!(zero.clone().with_bframes(Some(0)).validate().is_ok());
    assert!(zero.with_bframes(None).validate().is_ok());
    let film = EncoderConfig::new(64, 64)
        .with_tune(Some(Tune::Film))
        .with_bframes(Some(2));
    assert!(film.validate().is_ok());
}
