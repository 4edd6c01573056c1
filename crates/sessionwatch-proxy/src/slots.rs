//! A table indexed by backend id that grows while it is read: per-backend state (the backend
//! itself, its metrics, each worker's idle connections to it) for backends that join at run
//! time, with no lock on the request path.
//!
//! Ids are never reused, so an entry, once set, stays for the life of the table: a reader gets a
//! plain reference, and growing never moves an entry. The table is chunked: a fixed array of
//! lazily allocated chunks, so a read is two atomic loads and a full table costs nothing until
//! its chunks are used.

use std::sync::OnceLock;

/// Entries per chunk.
const CHUNK: usize = 256;
/// Chunks: together they cover every `u16` id.
const CHUNKS: usize = (u16::MAX as usize + 1) / CHUNK;

/// [`CHUNK`] entries, each set once.
type Chunk<T> = Box<[OnceLock<T>]>;

/// See the module docs.
pub(crate) struct Slots<T> {
    chunks: Box<[OnceLock<Chunk<T>>]>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Self {
            chunks: (0..CHUNKS).map(|_| OnceLock::new()).collect(),
        }
    }
}

impl<T> std::fmt::Debug for Slots<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slots")
            .field("set", &self.iter().count())
            .finish()
    }
}

impl<T> Slots<T> {
    /// The entry at `index`, if it has been set.
    #[inline]
    pub(crate) fn get(&self, index: usize) -> Option<&T> {
        self.chunks.get(index / CHUNK)?.get()?[index % CHUNK].get()
    }

    /// The entry at `index`, set by `init` if it was not; `None` only past the table's end.
    pub(crate) fn get_or_init(&self, index: usize, init: impl FnOnce() -> T) -> Option<&T> {
        let chunk = self
            .chunks
            .get(index / CHUNK)?
            .get_or_init(|| (0..CHUNK).map(|_| OnceLock::new()).collect());
        Some(chunk[index % CHUNK].get_or_init(init))
    }

    /// Every entry set, by index.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.chunks
            .iter()
            .enumerate()
            .filter_map(|(c, chunk)| chunk.get().map(|chunk| (c, chunk)))
            .flat_map(|(c, chunk)| {
                chunk
                    .iter()
                    .enumerate()
                    .filter_map(move |(i, e)| e.get().map(|e| (c * CHUNK + i, e)))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_set_anywhere_in_the_id_range_stay_where_they_were_put() {
        let slots = Slots::<String>::default();
        assert!(slots.get(0).is_none());
        assert_eq!(
            slots.get_or_init(3, || "three".into()).map(String::as_str),
            Some("three")
        );
        let first: *const String = slots.get(3).unwrap();
        // A second init does not replace it, and growing elsewhere does not move it.
        slots.get_or_init(3, || "other".into());
        slots.get_or_init(usize::from(u16::MAX), || "last".into());
        assert_eq!(slots.get(3).map(String::as_str), Some("three"));
        assert!(std::ptr::eq(first, slots.get(3).unwrap()));
        assert!(
            slots
                .get_or_init(usize::from(u16::MAX) + 1, || "past".into())
                .is_none()
        );
        let set: Vec<(usize, &str)> = slots.iter().map(|(i, s)| (i, s.as_str())).collect();
        assert_eq!(set, [(3, "three"), (65_535, "last")]);
    }
}
