//! Pixel-level access shared by the conv kernels: channels-last maps `[B,H,W,C]` that are
//! either stored densely or are the unpooling of a pooled map (read on the fly, so that
//! no full-resolution temporary is built), and the SIMD dispatch helper.

/// Read access to the pixels of a `[B,H,W,C]` map.
pub(crate) trait PixelLoad: Copy + Send + Sync {
    /// `[B, H, W, C]` of the (full-resolution) map.
    fn dims(&self) -> [usize; 4];

    /// Copies `n` whole pixels `(b, iy, ix..ix+n)` (all channels; the row must lie inside
    /// the map) into `dst` (`n·C` floats).
    fn load_run(&self, b: usize, iy: usize, ix: usize, dst: &mut [f32]);

    /// Channels `c0..c0+n` (`n <= 16`) of pixel `(b, iy, ix)` as one vector, zero in the
    /// lanes past `n` and outside the map.
    fn load16(&self, b: usize, iy: isize, ix: isize, c0: usize, n: usize) -> V16;

    /// The stored data when the map is dense (then rows can be used without copies).
    fn as_dense(&self) -> Option<&[f32]> {
        None
    }
}

/// Sixteen `f32` lanes: one AVX-512 register.
pub(crate) type V16 = [f32; 16];

/// `src[..n]` (`n <= 16`) as a vector, zero past `n`.
#[inline(always)]
pub(crate) fn get16(src: &[f32], n: usize) -> V16 {
    if n == 16 {
        *<&V16>::try_from(&src[..16]).expect("16 lanes")
    } else {
        let mut v = [0.0; 16];
        for (d, s) in v.iter_mut().zip(&src[..n]) {
            *d = *s;
        }
        v
    }
}

/// `dst[..n] = v[..n]` (`n <= 16`, `dst.len() >= n`).
#[inline(always)]
pub(crate) fn put16(dst: &mut [f32], v: &V16, n: usize) {
    if n == 16 {
        *<&mut V16>::try_from(&mut dst[..16]).expect("16 lanes") = *v;
    } else {
        for (d, s) in dst[..n].iter_mut().zip(v) {
            *d = *s;
        }
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
    fn load16(&self, b: usize, iy: isize, ix: isize, c0: usize, n: usize) -> V16 {
        let [_, h, w, c] = self.dims;
        if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
            return [0.0; 16];
        }
        get16(
            &self.x[((b * h + iy as usize) * w + ix as usize) * c + c0..],
            n,
        )
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
    fn load16(&self, b: usize, iy: isize, ix: isize, c0: usize, n: usize) -> V16 {
        let [_, h, w, c] = self.dims;
        let (ph, pw) = (h / 2, w / 2);
        if iy < 0 || ix < 0 || iy as usize >= 2 * ph || ix as usize >= 2 * pw {
            return [0.0; 16];
        }
        let (iy, ix) = (iy as usize, ix as usize);
        let k = (2 * (iy % 2) + ix % 2) as u8;
        let o = ((b * ph + iy / 2) * pw + ix / 2) * c + c0;
        let v = get16(&self.s[o..], n);
        let codes = crate::core::winograd::codes16(self.codes, o, n);
        let mut r = [0.0; 16];
        for l in 0..16 {
            r[l] = if codes[l] == k { v[l] } else { 0.0 };
        }
        r
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

/// Defines `$name`, which runs the `#[inline(always)]` function `$imp` compiled for the
/// widest vector unit of the CPU (AVX-512, AVX2+FMA or the baseline), chosen at run
/// time. `$imp` must be inlined into the `#[target_feature]` copies for the wide
/// instructions to be used, hence `#[inline(always)]`. The arithmetic is the same in
/// every copy (Rust never contracts `a*b+c` into fused multiply-adds), so results do not
/// depend on the instruction set.
macro_rules! simd_fn {
    (
        $(#[$m:meta])*
        $vis:vis unsafe fn $name:ident$(<$($g:ident: $b:path),*>)?($($a:ident: $t:ty),* $(,)?)
            = $imp:ident;
    ) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis unsafe fn $name$(<$($g: $b),*>)?($($a: $t),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn wide$(<$($g: $b),*>)?($($a: $t),*) {
                    $imp($($a),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn mid$(<$($g: $b),*>)?($($a: $t),*) {
                    $imp($($a),*)
                }
                match $crate::core::pixels::simd() {
                    $crate::core::pixels::Simd::Avx512 => return wide($($a),*),
                    $crate::core::pixels::Simd::Avx2 => return mid($($a),*),
                    $crate::core::pixels::Simd::Base => {}
                }
            }
            $imp($($a),*)
        }
    };
    (
        $(#[$m:meta])*
        $vis:vis fn $name:ident$(<$($g:ident: $b:path),*>)?($($a:ident: $t:ty),* $(,)?)
            = $imp:ident;
    ) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name$(<$($g: $b),*>)?($($a: $t),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn wide$(<$($g: $b),*>)?($($a: $t),*) {
                    $imp($($a),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn mid$(<$($g: $b),*>)?($($a: $t),*) {
                    $imp($($a),*)
                }
                match $crate::core::pixels::simd() {
                    // SAFETY: the CPU supports the enabled features (checked at run time).
                    $crate::core::pixels::Simd::Avx512 => return unsafe { wide($($a),*) },
                    $crate::core::pixels::Simd::Avx2 => return unsafe { mid($($a),*) },
                    $crate::core::pixels::Simd::Base => {}
                }
            }
            $imp($($a),*)
        }
    };
}
pub(crate) use simd_fn;
