//! Pixel-level access shared by the conv kernels: channels-last maps `[B,H,W,C]` that are
//! either stored densely or are the unpooling of a pooled map (read on the fly, so that
//! no full-resolution temporary is built), and the SIMD dispatch helper.

/// Read access to the pixels of a `[B,H,W,C]` map.
pub(crate) trait PixelLoad: Copy + Send + Sync {
    /// `[B, H, W, C]` of the (full-resolution) map.
    fn dims(&self) -> [usize; 4];

    /// Channels `c0..c0+dst.len()` of pixel `(b, iy, ix)` into `dst`; zero outside the map
    /// (`iy`/`ix` may be negative or past the edge: the zero padding of the convolution).
    fn load(&self, b: usize, iy: isize, ix: isize, c0: usize, dst: &mut [f32]);

    /// Copies `n` whole pixels `(b, iy, ix..ix+n)` (all channels; the row must lie inside
    /// the map) into `dst` (`n·C` floats).
    fn load_run(&self, b: usize, iy: usize, ix: usize, dst: &mut [f32]);

    /// The stored data when the map is dense (then rows can be used without copies).
    fn as_dense(&self) -> Option<&[f32]> {
        None
    }
}

/// A stored map.
#[derive(Clone, Copy)]
pub(crate) struct DenseMap<'a> {
    pub x: &'a [f32],
    pub dims: [usize; 4],
}

impl PixelLoad for DenseMap<'_> {
    #[inline(always)]
    fn dims(&self) -> [usize; 4] {
        self.dims
    }

    #[inline(always)]
    fn load(&self, b: usize, iy: isize, ix: isize, c0: usize, dst: &mut [f32]) {
        let [_, h, w, c] = self.dims;
        if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
            dst.fill(0.0);
            return;
        }
        let s = ((b * h + iy as usize) * w + ix as usize) * c + c0;
        dst.copy_from_slice(&self.x[s..s + dst.len()]);
    }

    #[inline(always)]
    fn load_run(&self, b: usize, iy: usize, ix: usize, dst: &mut [f32]) {
        let [_, h, w, c] = self.dims;
        let s = ((b * h + iy) * w + ix) * c;
        dst.copy_from_slice(&self.x[s..s + dst.len()]);
    }

    fn as_dense(&self) -> Option<&[f32]> {
        Some(self.x)
    }
}

/// `unpool2x2(s, codes)` of shape `dims` without materialising it: pixel `(2i+a, 2j+e)`
/// holds `s[i,j]` where `codes[i,j] = 2a+e`, zero elsewhere (and in the unpooled last
/// row/column of odd sizes).
#[derive(Clone, Copy)]
pub(crate) struct UnpooledMap<'a> {
    pub s: &'a [f32],
    pub codes: &'a [u8],
    pub dims: [usize; 4],
}

impl UnpooledMap<'_> {
    #[inline(always)]
    fn select(&self, b: usize, iy: usize, ix: usize, c0: usize, dst: &mut [f32]) {
        let [_, h, w, c] = self.dims;
        let (ph, pw) = (h / 2, w / 2);
        let (py, px) = (iy / 2, ix / 2);
        if py >= ph || px >= pw {
            dst.fill(0.0);
            return;
        }
        let k = (2 * (iy % 2) + ix % 2) as u8;
        let o = ((b * ph + py) * pw + px) * c + c0;
        let n = dst.len();
        for ((d, &v), &code) in dst
            .iter_mut()
            .zip(&self.s[o..o + n])
            .zip(&self.codes[o..o + n])
        {
            *d = if code == k { v } else { 0.0 };
        }
    }
}

impl PixelLoad for UnpooledMap<'_> {
    #[inline(always)]
    fn dims(&self) -> [usize; 4] {
        self.dims
    }

    #[inline(always)]
    fn load(&self, b: usize, iy: isize, ix: isize, c0: usize, dst: &mut [f32]) {
        let [_, h, w, _] = self.dims;
        if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
            dst.fill(0.0);
            return;
        }
        self.select(b, iy as usize, ix as usize, c0, dst);
    }

    #[inline(always)]
    fn load_run(&self, b: usize, iy: usize, ix: usize, dst: &mut [f32]) {
        let c = self.dims[3];
        for (k, d) in dst.chunks_exact_mut(c).enumerate() {
            self.select(b, iy, ix + k, 0, d);
        }
    }
}

/// A raw pointer handed to parallel tasks that write disjoint parts of one buffer.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub *mut T);
// SAFETY: only used to give parallel tasks disjoint regions of a buffer that outlives them;
// every use site documents why the regions are disjoint.
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer (a method, so that closures capture the whole `Send` wrapper).
    #[inline(always)]
    pub fn ptr(self) -> *mut T {
        self.0
    }

    /// # Safety
    /// `at..at+len` must lie in the buffer and no other live reference may overlap it.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, at: usize, len: usize) -> &mut [T] {
        std::slice::from_raw_parts_mut(self.0.add(at), len)
    }
}

/// Which vector instruction set the auto-vectorised transform loops are compiled for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Simd {
    Avx512,
    Avx2,
    Base,
}

/// The widest instruction set of this CPU (checked once, then cached by std).
#[inline]
pub(crate) fn simd() -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return Simd::Avx512;
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return Simd::Avx2;
        }
    }
    Simd::Base
}

/// Calls `f` (for [`simd_dispatch`]).
#[inline(always)]
pub(crate) fn call<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Runs the `#[inline(always)]` body `$body` compiled for the widest available vector
/// unit: `dispatch!(|| expr)` evaluates `expr` inside a `#[target_feature]` function.
/// The arithmetic is the same in every variant (no fused multiply-adds are introduced:
/// Rust never contracts `a*b+c`), so results do not depend on the instruction set.
macro_rules! simd_dispatch {
    ($body:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
            unsafe fn wide<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            #[target_feature(enable = "avx2,fma")]
            unsafe fn mid<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            let f = $body;
            match $crate::core::pixels::simd() {
                // SAFETY: the CPU supports the enabled features (checked at runtime).
                $crate::core::pixels::Simd::Avx512 => unsafe { wide(f) },
                $crate::core::pixels::Simd::Avx2 => unsafe { mid(f) },
                $crate::core::pixels::Simd::Base => $crate::core::pixels::call(f),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            ($body)()
        }
    }};
}
pub(crate) use simd_dispatch;
