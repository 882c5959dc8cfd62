//! How a frame lies in a pitched surface: the plane copies between a tightly packed frame and an
//! input surface (NVENC's own, or a device ring slot, which share the layout). Shared by the NVENC
//! backend and [`SlotFrame::host_bytes`](super::SlotFrame::host_bytes), so neither imports the
//! other.

use crate::cuda::Plane;

use super::{EncoderConfig, PixelFormat};

/// The plane copies of a frame of `config` with luma rows `src_pitch` bytes apart into a surface
/// with rows `dst_pitch` bytes apart (one copy for NV12, whose chroma shares the luma pitch; three for I420, whose chroma planes
/// have half the pitch, as NVENC's IYUV layout has). A fixed array and a count, so the per-frame
/// path allocates nothing.
pub(crate) fn plane_copies(
    config: &EncoderConfig,
    src_pitch: usize,
    dst_pitch: usize,
) -> ([Plane; 3], usize) {
    let w = config.resolution.width as usize;
    let h = config.resolution.height as usize;
    let plane = |src_offset, src_pitch, dst_offset, dst_pitch, width, rows| Plane {
        src_offset,
        src_pitch,
        dst_offset,
        dst_pitch,
        width,
        rows,
    };
    match config.pixel_format {
        PixelFormat::Nv12 => {
            let all = plane(0, src_pitch, 0, dst_pitch, w, h * 3 / 2);
            ([all; 3], 1)
        }
        _ => {
            let (sc, dc) = (src_pitch / 2, dst_pitch / 2);
            (
                [
                    plane(0, src_pitch, 0, dst_pitch, w, h),
                    plane(src_pitch * h, sc, dst_pitch * h, dc, w / 2, h / 2),
                    plane(
                        src_pitch * h + sc * (h / 2),
                        sc,
                        dst_pitch * h + dc * (h / 2),
                        dc,
                        w / 2,
                        h / 2,
                    ),
                ],
                3,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i420_chroma_planes_follow_the_luma_at_half_the_pitch() {
        let config = EncoderConfig::new(64, 32);
        let (planes, n) = plane_copies(&config, 64, 128);
        assert_eq!(n, 3);
        assert_eq!(
            (planes[1].src_offset, planes[1].dst_offset),
            (64 * 32, 128 * 32)
        );
        assert_eq!((planes[1].src_pitch, planes[1].dst_pitch), (32, 64));
        assert_eq!(
            (planes[2].src_offset, planes[2].dst_offset),
            (64 * 32 + 32 * 16, 128 * 32 + 64 * 16)
        );
        assert_eq!((planes[2].width, planes[2].rows), (32, 16));
        let nv12 = config.with_pixel_format(PixelFormat::Nv12);
        let (planes, n) = plane_copies(&nv12, 64, 128);
        assert_eq!(n, 1);
        assert_eq!((planes[0].width, planes[0].rows), (64, 48));
    }
}
