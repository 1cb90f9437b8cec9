//! A received flow's frames as a receiver merges them: decoded on a thread of the driver's
//! while the merge runs on its own, when the driver allows it, or in turn otherwise.
//!
//! The core never starts a thread: the driver (the `outpost` binary, the benchmark harness)
//! hands over a way to run a job beside with [`decode_beside`]. The receiver's code is the same
//! either way and so are the frames, in the same order: only where the decoding runs differs.
//! At most [`FRAMES_IN_FLIGHT`] decoded frames wait for the merge, so memory stays bounded.

use std::io::{self, Read};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use outpost_engine::Knowledge;

use crate::flow::{DecodeError, FlowHeader, FlowReader, Incoming, IncomingItem};

/// Runs a job on a thread of the driver's.
pub type Spawn = fn(Box<dyn FnOnce() + Send + 'static>);

static SPAWN: OnceLock<Spawn> = OnceLock::new();

/// Decoded frames waiting for the merge, at most (a frame holds up to 1,024 changes).
pub const FRAMES_IN_FLIGHT: usize = 4;

/// Lets receivers decode flows on another thread while they merge: `spawn` runs a job on a
/// thread of the driver's (`|job| { std::thread::spawn(job); }`). Set once per process; without
/// it, receivers decode in turn.
pub fn decode_beside(spawn: Spawn) {
    // A second call changes nothing: the first way stands.
    let _ = SPAWN.set(spawn);
}

enum Sent {
    Frame(IncomingItem),
    /// The end frame was read: the number of changes the flow held.
    End(u64),
}

/// Moves the rest of a flow's decoding to a thread of the driver's.
type Handoff<R> = fn(Box<FlowReader<R>>, Knowledge, Spawn) -> Source<R>;

/// How many of a flow's first items (frames of up to 1,024 changes, refused changes) are
/// decoded in turn before the rest is handed to a thread: a flow that ends within them (a day's
/// emission or return) costs no thread.
pub const ITEMS_HERE: u32 = 4;

enum Source<R: Read> {
    /// Decoded here; after [`ITEMS_HERE`] items, handed off beside when the driver allows it.
    Here(Box<FlowReader<R>>, Knowledge, Option<(Handoff<R>, Spawn)>),
    /// The decoded frames, and the way back for merged ones, freed where they were made.
    Beside(
        Receiver<Result<Sent, DecodeError>>,
        SyncSender<Vec<Incoming>>,
    ),
    Done,
}

/// A flow's frames, the changes the receiver holds marked as such
/// ([`FlowReader::next_item_lacking`] against the knowledge given, which the merge must not
/// change while it reads them — a merge adds its knowledge once all is merged).
pub struct Frames<R: Read> {
    header: FlowHeader,
    n_changes: u64,
    items_here: u32,
    source: Source<R>,
}

impl<R: Read> std::fmt::Debug for Frames<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frames")
            .field("flow", &self.header.id)
            .field("beside", &matches!(self.source, Source::Beside(..)))
            .finish()
    }
}

impl<R: Read> Frames<R> {
    /// Frames decoded in turn, on this thread.
    pub fn here(reader: FlowReader<R>, known: Knowledge) -> Frames<R> {
        Frames {
            header: reader.header().clone(),
            n_changes: 0,
            items_here: 0,
            source: Source::Here(Box::new(reader), known, None),
        }
    }

    /// The flow's header.
    pub fn header(&self) -> &FlowHeader {
        &self.header
    }

    /// The changes the flow held, once the last frame was read.
    pub fn n_changes(&self) -> u64 {
        self.n_changes
    }

    /// The next frame; `None` after the end frame.
    pub fn next_frame(&mut self) -> Result<Option<IncomingItem>, DecodeError> {
        match &mut self.source {
            Source::Here(reader, known, handoff) => {
                let item = match reader.next_item_lacking(known) {
                    Ok(item) => item,
                    Err(e) => {
                        self.source = Source::Done;
                        return Err(e);
                    }
                };
                if item.is_none() {
                    self.n_changes = reader.n_changes();
                    self.source = Source::Done;
                    return Ok(item);
                }
                self.items_here += 1;
                if self.items_here >= ITEMS_HERE
                    && let Some((hand, spawn)) = handoff.take()
                    && let Source::Here(reader, known, _) =
                        std::mem::replace(&mut self.source, Source::Done)
                {
                    self.source = hand(reader, known, spawn);
                }
                Ok(item)
            }
            Source::Beside(rx, _) => match rx.recv() {
                Ok(Ok(Sent::Frame(item))) => Ok(Some(item)),
                Ok(Ok(Sent::End(n))) => {
                    self.n_changes = n;
                    self.source = Source::Done;
                    Ok(None)
                }
                Ok(Err(e)) => {
                    self.source = Source::Done;
                    Err(e)
                }
                Err(_) => {
                    self.source = Source::Done;
                    Err(DecodeError::Io(io::Error::other(
                        "the thread decoding the flow stopped before its end",
                    )))
                }
            },
            Source::Done => Ok(None),
        }
    }

    /// Gives back a frame's changes once merged: the decoding thread frees them, where they
    /// were allocated (cheaper for the allocator, and off the merge's thread).
    pub fn recycle(&mut self, changes: Vec<Incoming>) {
        if let Source::Beside(_, back) = &self.source {
            // Full or gone: freed here.
            let _ = back.try_send(changes);
        }
    }
}

impl<R: Read + Send + 'static> Frames<R> {
    /// Frames decoded beside when the driver allows it ([`decode_beside`]) and the flow is
    /// longer than [`ITEMS_HERE`] items, else in turn.
    pub fn new(reader: FlowReader<R>, known: Knowledge) -> Frames<R> {
        let mut frames = Frames::here(reader, known);
        if let (Some(spawn), Source::Here(_, _, handoff)) = (SPAWN.get(), &mut frames.source) {
            *handoff = Some((beside::<R> as Handoff<R>, *spawn));
        }
        frames
    }
}

/// Decodes the rest of `reader` on a thread of the driver's.
fn beside<R: Read + Send + 'static>(
    reader: Box<FlowReader<R>>,
    known: Knowledge,
    spawn: Spawn,
) -> Source<R> {
    let (tx, rx) = sync_channel(FRAMES_IN_FLIGHT);
    let (back, merged) = sync_channel::<Vec<Incoming>>(FRAMES_IN_FLIGHT);
    spawn(Box::new(move || {
        let mut reader = reader;
        loop {
            while let Ok(done) = merged.try_recv() {
                drop(done);
            }
            let sent = match reader.next_item_lacking(&known) {
                Ok(Some(item)) => Ok(Sent::Frame(item)),
                Ok(None) => Ok(Sent::End(reader.n_changes())),
                Err(e) => Err(e),
            };
            let last = !matches!(sent, Ok(Sent::Frame(_)));
            // The merge stopped (an error, a refusal): so does the decoding.
            if tx.send(sent).is_err() || last {
                return;
            }
        }
    }));
    Source::Beside(rx, back)
}

#[cfg(test)]
mod tests {
    use outpost_engine::{Dot, SiteId};

    use super::*;
    use crate::flow::tests::{change, header};
    use crate::flow::{FlowWriter, Incoming};

    fn flow(n: u64) -> Vec<u8> {
        let mut w = FlowWriter::new(Vec::new(), &header(), false).unwrap();
        for i in 0..n {
            w.push_change(change(i)).unwrap();
        }
        w.finish().unwrap().0
    }

    fn all(mut frames: Frames<io::Cursor<Vec<u8>>>) -> (Vec<Vec<Incoming>>, u64) {
        let mut out = Vec::new();
        while let Some(item) = frames.next_frame().unwrap() {
            if let IncomingItem::Changes(c) = item {
                out.push(c.clone());
                frames.recycle(c);
            }
        }
        (out, frames.n_changes())
    }

    #[test]
    // The test plays the driver, which lends the thread.
    #[allow(
        clippy::unwrap_used,
        clippy::indexing_slicing,
        clippy::disallowed_methods
    )]
    fn frames_decoded_beside_are_those_decoded_in_turn_and_a_damaged_flow_fails_the_same() {
        decode_beside(|job| {
            std::thread::spawn(job);
        });
        // More frames than are decoded in turn: the rest goes beside.
        let bytes = flow(10_000);
        let mut known = Knowledge::new();
        known.insert(Dot {
            site: SiteId(2),
            seq: 7,
        });
        let open = |b: &[u8]| FlowReader::open(io::Cursor::new(b.to_vec())).unwrap();
        let here = all(Frames::here(open(&bytes), known.clone()));
        let mut frames = Frames::new(open(&bytes), known.clone());
        for _ in 0..ITEMS_HERE {
            assert!(matches!(frames.source, Source::Here(..)));
            frames.next_frame().unwrap();
        }
        assert!(matches!(frames.source, Source::Beside(..)), "handed off");
        let beside = all(Frames::new(open(&bytes), known.clone()));
        assert_eq!(here.1, 10_000);
        assert!(
            here.0.len() > ITEMS_HERE as usize,
            "more frames than decoded in turn"
        );
        assert_eq!(here, beside);
        // A flow of fewer items never starts a thread.
        let small = flow(500);
        let mut frames = Frames::new(open(&small), known.clone());
        while frames.next_frame().unwrap().is_some() {
            assert!(!matches!(frames.source, Source::Beside(..)));
        }
        // Cut short: the same error either way, after the same frames.
        let cut = &bytes[..bytes.len() - 10];
        let run = |mut f: Frames<io::Cursor<Vec<u8>>>| {
            let mut n = 0;
            loop {
                match f.next_frame() {
                    Ok(Some(_)) => n += 1,
                    Ok(None) => return Ok(n),
                    Err(e) => return Err((n, e.to_string())),
                }
            }
        };
        let here = run(Frames::here(open(cut), known.clone()));
        assert!(here.is_err());
        assert_eq!(here, run(Frames::new(open(cut), known)));
    }
}
