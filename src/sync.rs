//! The one switch between std's and loom's synchronisation types.
//!
//! Code that shares memory between threads imports atomics, `Arc` and `UnsafeCell` from here,
//! never from `std` (clippy's `disallowed-types` enforces it), so that building with
//! `RUSTFLAGS="--cfg loom"` puts every such access under loom's model checker.
//!
//! `UnsafeCell` offers loom's closure API (`with`, `with_mut`) in both builds, so one body of
//! code compiles either way.
#![allow(clippy::disallowed_types)]
// The module is the crate's whole vocabulary of shared-memory types, whether or not every
// item has a user yet in a given build (the ring keeps its bytes outside `UnsafeCell`).
#![allow(dead_code, unused_imports)]

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;
#[cfg(loom)]
pub(crate) use loom::sync::Arc;
#[cfg(loom)]
pub(crate) mod atomic {
    pub(crate) use loom::sync::atomic::{
        AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
    };
}

// Aliases rather than re-exports: clippy's `disallowed-types` sees through a `use`, and
// would flag every user of the switch, but it does not look through a type alias.
/// std's `Arc` (loom's under `cfg(loom)`).
#[cfg(not(loom))]
pub(crate) type Arc<T> = std::sync::Arc<T>;
#[cfg(not(loom))]
pub(crate) mod atomic {
    pub(crate) use std::sync::atomic::{Ordering, fence};
    /// std's atomic (loom's under `cfg(loom)`).
    pub(crate) type AtomicBool = std::sync::atomic::AtomicBool;
    /// std's atomic (loom's under `cfg(loom)`).
    pub(crate) type AtomicU32 = std::sync::atomic::AtomicU32;
    /// std's atomic (loom's under `cfg(loom)`).
    pub(crate) type AtomicU64 = std::sync::atomic::AtomicU64;
    /// std's atomic (loom's under `cfg(loom)`).
    pub(crate) type AtomicUsize = std::sync::atomic::AtomicUsize;
}

/// std's `UnsafeCell` with loom's access API.
#[cfg(not(loom))]
#[derive(Debug)]
#[repr(transparent)]
pub(crate) struct UnsafeCell<T: ?Sized>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }
}

#[cfg(not(loom))]
impl<T: ?Sized> UnsafeCell<T> {
    /// Runs `f` with a shared raw pointer to the contents.
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Runs `f` with a mutable raw pointer to the contents.
    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// std's types, in every build: for the router's bookkeeping (flags, counters, shared
/// handles), which loom does not model. Only the ring's protocol goes through loom.
pub(crate) mod plain {
    /// std's `Arc`.
    pub(crate) type Arc<T> = std::sync::Arc<T>;
    /// std's `Weak`.
    pub(crate) type Weak<T> = std::sync::Weak<T>;
    /// std's atomic.
    pub(crate) type AtomicBool = std::sync::atomic::AtomicBool;
    /// std's atomic.
    pub(crate) type AtomicU64 = std::sync::atomic::AtomicU64;
    pub(crate) use std::sync::atomic::{Ordering, fence};
}
