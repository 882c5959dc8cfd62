//! The calls of an open session that may block (mapping, uploading, submitting, reading back,
//! waiting for the stream): on the watchdog's worker once it runs, each awaited at most the
//! deadline.

use nvenc_sys as sys;
use nvenc_sys::NVENCSTATUS;

use super::calls::{
    lock_on, map_on, mixed_up, sequence_params_on, submit_on, unmap_on, Blocking, CallError,
    SessionPtr, Unblocked,
};
use super::{
    flag, BitstreamBuffer, LockedInfo, Mapped, PicParams, PictureInput, RawEncoder, Registered,
    Submitted,
};
use std::ffi::c_void;

use super::IoStream;
use crate::cuda::{Pending, PlannedUpload, Stream};
use crate::nvenc::staged::Staged;
use crate::nvenc::NvencError;

impl RawEncoder {
    /// `nvEncMapInputResource`, on the watchdog's worker once it runs.
    #[doc(alias = "nvEncMapInputResource")]
    pub(crate) fn map(&self, resource: &Registered) -> Result<Mapped, CallError> {
        let resource = SessionPtr(resource.ptr);
        let mapped = match &self.watchdog {
            None => map_on(&self.lib, self.raw(), resource)?,
            Some(worker) => match worker.call("nvEncMapInputResource", Blocking::Map(resource)) {
                Ok(Unblocked::Mapped(result)) => result?,
                Ok(_) => return Err(CallError::Failed(mixed_up())),
                Err(hung) => return Err(CallError::Hung(hung)),
            },
        };
        Ok(Mapped {
            ptr: mapped.0 .0,
            format: mapped.1,
        })
    }

    /// `nvEncUnmapInputResource`, on the watchdog's worker once it runs. On failure the mapping
    /// is given back, so the caller can try again (after a hang it must not: the session is
    /// abandoned).
    #[doc(alias = "nvEncUnmapInputResource")]
    pub(crate) fn unmap(&self, mapped: Mapped) -> Result<(), (Mapped, CallError)> {
        let result = match &self.watchdog {
            None => unmap_on(&self.lib, self.raw(), mapped.ptr.as_ptr()).map_err(CallError::from),
            Some(worker) => {
                match worker.call(
                    "nvEncUnmapInputResource",
                    Blocking::Unmap(SessionPtr(mapped.ptr)),
                ) {
                    Ok(Unblocked::Unmapped(result)) => result.map_err(CallError::from),
                    Ok(_) => Err(CallError::Failed(mixed_up())),
                    Err(hung) => Err(CallError::Hung(hung)),
                }
            }
        };
        result.map_err(|e| (mapped, e))
    }

    /// Queues a frame's upload into an input surface (`cuMemcpy2DAsync` per plane), on the
    /// watchdog's worker once it runs, and gives back what owns the copies' memory until they
    /// ran. On a failure the copies before it may be queued: the `Pending` comes back with the
    /// error, to be waited for. After a hang it stays with the worker (`None`), keeping the
    /// memory the copies use for as long as the call may still queue them.
    pub(crate) fn upload(
        &self,
        planned: PlannedUpload<Staged>,
    ) -> Result<Pending<Staged>, (Option<Pending<Staged>>, CallError)> {
        let Some(worker) = &self.watchdog else {
            return match planned.queue() {
                (pending, Ok(())) => Ok(pending),
                (pending, Err(e)) => Err((Some(pending), cuda_failed("cuMemcpy2DAsync_v2", &e))),
            };
        };
        match worker.call("cuMemcpy2DAsync_v2", Blocking::Upload(planned)) {
            Ok(Unblocked::Uploaded(pending, Ok(()))) => Ok(pending),
            Ok(Unblocked::Uploaded(pending, Err(e))) => {
                Err((Some(pending), cuda_failed("cuMemcpy2DAsync_v2", &e)))
            }
            Ok(_) => Err((None, CallError::Failed(mixed_up()))),
            Err(hung) => Err((None, CallError::Hung(hung))),
        }
    }

    /// A pinned staging buffer of `len` bytes (`cuMemHostAlloc`), allocated on the watchdog's
    /// worker once it runs.
    pub(crate) fn pinned(&self, len: usize) -> Result<crate::cuda::PinnedBuffer, CallError> {
        let Some(worker) = &self.watchdog else {
            return Err(CallError::Failed(mixed_up()));
        };
        match worker.call("cuMemHostAlloc", Blocking::Pinned(len)) {
            Ok(Unblocked::Pinned(result)) => result.map_err(|e| cuda_failed("cuMemHostAlloc", &e)),
            Ok(_) => Err(CallError::Failed(mixed_up())),
            Err(hung) => Err(CallError::Hung(hung)),
        }
    }

    /// `cuStreamSynchronize` of the session's IO stream (the uploads and NVENC's input
    /// processing), on the watchdog's worker once it runs.
    pub(crate) fn synchronize(&self) -> Result<(), CallError> {
        let Some(io) = &self.io_stream else {
            return Ok(());
        };
        let stream = io.stream.clone();
        let result = match &self.watchdog {
            None => stream.synchronize(),
            Some(worker) => match worker.call("cuStreamSynchronize", Blocking::Synchronize(stream))
            {
                Ok(Unblocked::Synchronized(result)) => result,
                Ok(_) => return Err(CallError::Failed(mixed_up())),
                Err(hung) => return Err(CallError::Hung(hung)),
            },
        };
        result.map_err(|e| cuda_failed("cuStreamSynchronize", &e))
    }

    fn submit(&self, params: sys::NV_ENC_PIC_PARAMS) -> Result<Submitted, CallError> {
        let mut params = params;
        match &self.watchdog {
            None => Ok(submit_on(&self.lib, self.raw(), &mut params)?),
            Some(worker) => {
                match worker.call("nvEncEncodePicture", Blocking::Submit(PicParams(params))) {
                    Ok(Unblocked::Submitted(result)) => Ok(result?),
                    Ok(_) => Err(CallError::Failed(mixed_up())),
                    Err(hung) => Err(CallError::Hung(hung)),
                }
            }
        }
    }

    /// `nvEncEncodePicture` for one frame.
    #[doc(alias = "nvEncEncodePicture")]
    pub(crate) fn encode_picture(
        &self,
        picture: &PictureInput<'_>,
    ) -> Result<Submitted, CallError> {
        let mut params = versioned!(sys::NV_ENC_PIC_PARAMS, sys::NV_ENC_PIC_PARAMS_VER);
        params.inputWidth = picture.width;
        params.inputHeight = picture.height;
        params.inputPitch = picture.pitch;
        params.inputBuffer = picture.input.ptr.as_ptr();
        params.bufferFmt = picture.input.format;
        params.outputBitstream = picture.output.0.as_ptr();
        params.inputTimeStamp = picture.timestamp;
        params.inputDuration = 1;
        params.pictureStruct = sys::NV_ENC_PIC_STRUCT::NV_ENC_PIC_STRUCT_FRAME;
        let mut flags = 0u32;
        if picture.force_idr {
            flags |= flag(sys::NV_ENC_PIC_FLAGS::NV_ENC_PIC_FLAG_FORCEIDR);
        }
        if picture.output_spspps {
            flags |= flag(sys::NV_ENC_PIC_FLAGS::NV_ENC_PIC_FLAG_OUTPUT_SPSPPS);
        }
        params.encodePicFlags = flags;
        self.submit(params)
    }

    /// `nvEncEncodePicture` with `NV_ENC_PIC_FLAG_EOS` and no input: drains the encoder.
    #[doc(alias = "nvEncEncodePicture")]
    pub(crate) fn end_of_stream(&self) -> Result<Submitted, CallError> {
        let mut params = versioned!(sys::NV_ENC_PIC_PARAMS, sys::NV_ENC_PIC_PARAMS_VER);
        params.encodePicFlags = flag(sys::NV_ENC_PIC_FLAGS::NV_ENC_PIC_FLAG_EOS);
        self.submit(params)
    }

    /// `nvEncLockBitstream` (waiting), copy into `out`, `nvEncUnlockBitstream`.
    #[doc(alias = "nvEncLockBitstream")]
    pub(crate) fn read_bitstream(
        &self,
        buffer: &BitstreamBuffer,
        out: &mut Vec<u8>,
    ) -> Result<LockedInfo, CallError> {
        let Some(worker) = &self.watchdog else {
            return Ok(lock_on(&self.lib, self.raw(), buffer.0.as_ptr(), out)?);
        };
        let request = Blocking::Lock {
            buffer: SessionPtr(buffer.0),
            out: std::mem::take(out),
        };
        match worker.call("nvEncLockBitstream", request) {
            Ok(Unblocked::Locked(result, bytes)) => {
                *out = bytes;
                Ok(result?)
            }
            Ok(_) => Err(CallError::Failed(mixed_up())),
            Err(hung) => Err(CallError::Hung(hung)),
        }
    }

    /// `nvEncSetIOCudaStreams`: NVENC's input pre-processing and output post-processing run on
    /// `stream` (of the session's context) instead of the default stream, ordered after the
    /// uploads queued there. The session keeps the stream, and the handle whose address the
    /// driver keeps, for its life.
    #[doc(alias = "nvEncSetIOCudaStreams")]
    pub(crate) fn set_io_cuda_streams(&mut self, stream: &Stream) -> Result<(), NvencError> {
        let mut io = IoStream {
            stream: stream.clone(),
            handle: Box::new(stream.raw()),
        };
        let ptr: *mut sys::NV_ENC_CUSTREAM_PTR = &mut *io.handle;
        let ptr = ptr.cast::<c_void>();
        // SAFETY: live session; `ptr` points at a live CUstream handle in a box that `self`
        // keeps (with the stream) until after the session is destroyed, so it stays valid and
        // at the same address.
        let status = unsafe { (self.lib.fns().set_io_cuda_streams)(self.raw(), ptr, ptr) };
        // Kept even on failure: the driver may have kept the address.
        self.io_stream = Some(io);
        self.check("nvEncSetIOCudaStreams", status)
    }

    /// The source of the upload into a picture's input surface, once the session's IO stream
    /// (on which it was queued) has been waited for ([`RawEncoder::synchronize`]). On an error
    /// the upload is given back unfinished: it may still run, so its memory must be kept (and
    /// not dropped on this thread, since dropping it waits for the stream).
    pub(crate) fn upload_done<T>(
        &self,
        upload: Pending<T>,
    ) -> Result<Option<T>, (Pending<T>, CallError)> {
        if let Err(e) = self.synchronize() {
            return Err((upload, e));
        }
        // SAFETY: the stream the upload was queued on (the session's IO stream: every upload is
        // queued there) has just been waited for, so the copies ran.
        Ok(unsafe { upload.ran() })
    }

    /// The source of the upload into a picture's input surface, given back once the picture's
    /// bitstream was locked, without waiting for the stream.
    pub(crate) fn input_consumed<T>(&self, _locked: &LockedInfo, upload: Pending<T>) -> Option<T> {
        // SAFETY: the upload was queued on the session's IO stream before the picture was
        // submitted, and NVENC's input processing of that picture runs on the same stream after
        // it; a locked bitstream means the input was processed, so the copy ran. (The caller
        // passes the upload of the picture whose output it locked.)
        unsafe { upload.ran() }
    }

    /// `nvEncGetSequenceParams`: the SPS and PPS, Annex B. On the watchdog's worker once it
    /// runs, since "the client must call NvEncGetSequenceParams() function from the same thread
    /// which is being used to call NvEncEncodePicture()" (nvEncodeAPI.h).
    #[doc(alias = "nvEncGetSequenceParams")]
    pub(crate) fn sequence_params(&self) -> Result<Vec<u8>, CallError> {
        let Some(worker) = &self.watchdog else {
            return Ok(sequence_params_on(&self.lib, self.raw())?);
        };
        match worker.call("nvEncGetSequenceParams", Blocking::SequenceParams) {
            Ok(Unblocked::SequenceParams(result)) => Ok(result?),
            Ok(_) => Err(CallError::Failed(mixed_up())),
            Err(hung) => Err(CallError::Hung(hung)),
        }
    }
}

/// A failed CUDA call of the session, as a call error naming it.
fn cuda_failed(call: &'static str, e: &crate::cuda::CudaError) -> CallError {
    CallError::Failed(NvencError::new(
        call,
        NVENCSTATUS::NV_ENC_ERR_GENERIC,
        e.to_string(),
    ))
}
