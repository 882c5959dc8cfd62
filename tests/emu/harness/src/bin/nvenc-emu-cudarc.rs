//! Runs the cudarc calls an NVENC backend makes (context, stream, plain and pitched device
//! memory, pinned host memory, copies both ways) against whatever `libcuda` the process loads,
//! and exits 0 if the data round-trips. The emulator tests run it on the emulated `libcuda` to
//! show that cudarc works there unchanged. Test infrastructure, not product.

use std::process::ExitCode;

use cudarc::driver::{sys, CudaContext, DriverError};

fn run() -> Result<String, DriverError> {
    let ctx = CudaContext::new(0)?;
    let stream = ctx.new_stream()?;
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    let dev = stream.clone_htod(&data)?;
    let back = stream.clone_dtoh(&dev)?;
    assert_eq!(back, data, "device round trip");
    let zeros = stream.alloc_zeros::<u8>(1000)?;
    assert!(stream.clone_dtoh(&zeros)?.iter().all(|&b| b == 0));
    // SAFETY: the pinned buffer is only written through cudarc before being read.
    let mut pinned = unsafe { ctx.alloc_pinned::<u8>(4096) }?;
    stream.memcpy_dtoh(&dev, &mut pinned)?;
    stream.synchronize()?;
    assert_eq!(pinned.as_slice()?, &data[..]);
    // Pitched memory, as NVENC surfaces are allocated.
    let (mut ptr, mut pitch) = (0u64, 0usize);
    // SAFETY: valid out-pointers; the context is bound to this thread.
    let rc = unsafe { sys::cuMemAllocPitch_v2(&mut ptr, &mut pitch, 640, 540, 4) };
    assert_eq!(rc, sys::CUresult::CUDA_SUCCESS);
    // SAFETY: freeing the allocation made above.
    let rc = unsafe { sys::cuMemFree_v2(ptr) };
    assert_eq!(rc, sys::CUresult::CUDA_SUCCESS);
    let name = ctx.name()?;
    drop((dev, zeros, pinned, stream));
    Ok(format!("cudarc ok device={name:?} pitch={pitch}"))
}

fn main() -> ExitCode {
    match run() {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nvenc-emu-cudarc: {e}");
            ExitCode::FAILURE
        }
    }
}
