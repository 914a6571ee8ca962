//! Lock poisoning, one policy for the crate's in-memory state.
//!
//! A lock is poisoned when a thread panicked while holding it. The library denies `panic!`,
//! `unwrap` and `expect`, and every value it guards behind a lock (caches, counters, the
//! writer's queue handle, job progress) is changed by one assignment, insertion or removal, so
//! a poisoned lock still holds a consistent value. The guard is therefore taken over
//! (`PoisonError::into_inner`) instead of passing the panic on to every later caller.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Read access to `l`, poisoned or not.
pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

/// Write access to `l`, poisoned or not.
pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

/// The lock of `m`, poisoned or not.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
