//! Allocation sites that outlived their objects, dropped from a heap dump as it is compressed.
//!
//! Stage: `run`. With sampled sites (the default) objspace's free hook is on only in some of the
//! agent's tracing phases (under `none` only where the agent can count the records, which its
//! malloc measure takes off; always otherwise): it costs every freed object some 100 ns, and
//! under LSan a freed record can hide a native leak (agent.rb's `AllocationSites`). A record
//! whose object is freed while it
//! is off stays behind, and a dump gives its file:line, method and generation to whatever object
//! takes the slot next, of any class. This module tells those apart with what a process's
//! previous dump held, and removes their site keys from the dump's lines, so that every reader of
//! the bundle sees such an object as untraced:
//!
//! - an object that was not in the previous dump (same address, type, class and generation:
//!   [`object_stamp`]) was made after it, so a true record of it is newer than every record that
//!   dump showed (a round traces its own objects into its dump until the program resumes, under
//!   LSan until its command returns, and
//!   every tracing phase ends with a minor GC, a round's once its command returned, before any
//!   window opens, so the next traced object has a higher generation); a record no newer than
//!   those is an earlier, freed object's (under LSan a round's own objects keep theirs when they
//!   die);
//! - an object that was in the previous dump with a stale record still has it.
//!
//! Objects do not move between dumps unless the program compacts the heap (`GC.compact`), and
//! objspace does not move records with their objects then: a moved object may take a record
//! left in its new slot. What this cannot tell either: an object freed
//! after a dump that showed it, whose slot went to an object of the same class before the next
//! one (same stamp). That object carries the site of the one the previous dump showed in its
//! slot, so a site's count in a dump never exceeds its count in the previous one plus its true
//! new records: a stale site can hide a fall, never make a rise. Nor can it tell a window's
//! object that outlives the free hook (under LSan the window's closing GC; elsewhere ten GCs
//! after the window, agent.rb's `TAIL_GCS`) and dies before the next round: its record, newer
//! than the previous dump, goes to the slot's next object.
//!
//! A forked process inherits its parent's records, stale ones too: until its own first dump it
//! is judged against its parent's last dump, if that one was taken before the fork (the child's
//! hello tells its GC count at the fork; a dump's records are no newer than the GC count then).
//!
//! A process's first round has no previous dump. Its records are all true when allocation
//! tracing ran from the start to that round (every object made before it got a record of its
//! own). When warm-up ended earlier, under a backend whose free hook is off in warm-up, the
//! agent left a dump of the heap as warm-up ended (`warmup-PID.json` in its private directory,
//! [`warmup_dump`]): the first round is judged against that one, as against a previous round's.

use crate::heap::cruby::diff::{object_stamp, pack_key};
use crate::heap::cruby::scan::{RecordKind, hex_string, number, parse_line, parse_prefix};
use memchr::{memchr, memmem, memrchr};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The name of the dump the agent leaves as a process's warm-up ends before its first round
/// (agent.rb's `AllocationSites.warmup_dump`).
fn warmup_dump(pid: u32) -> String {
    format!("warmup-{pid}.json")
}

/// Per process id (0: a bundle of schema 1), what its last dump held; a forked process shares
/// its parent's until it has one of its own.
pub type PreviousDumps = BTreeMap<u32, Arc<PreviousDump>>;

/// What a run's filter keeps across rounds: each process's last dump.
#[derive(Debug, Default)]
pub struct StaleSites {
    pub dumps: PreviousDumps,
    /// Where the agent leaves warm-up dumps (its private directory); none: not looked for.
    pub warmup_dir: Option<PathBuf>,
    /// The warm-up dumps read, kept while their process lives: a child it forked before its
    /// first round, whose hello leakhunt reads only after that round, is judged by it.
    warmups: PreviousDumps,
}

impl StaleSites {
    pub fn with_warmup_dir(dir: &Path) -> Self {
        StaleSites {
            dumps: PreviousDumps::new(),
            warmup_dir: Some(dir.to_path_buf()),
            warmups: PreviousDumps::new(),
        }
    }

    /// What `pid`'s next dump is judged against, taken out: the warm-up dump it left since its
    /// last one (it is newer: a warm-up ends before the process's first round), or its last one.
    pub fn take(&mut self, pid: u32) -> Option<Arc<PreviousDump>> {
        let last = self.dumps.remove(&pid);
        self.take_warmup(pid).or(last)
    }

    /// A process ended: what its next dump would have been judged against goes, its warm-up dump
    /// too (one whose process ended before its first round is never read).
    pub fn process_ended(&mut self, pid: u32) {
        self.dumps.remove(&pid);
        self.warmups.remove(&pid);
        if let Some(dir) = &self.warmup_dir {
            for name in [warmup_dump(pid), format!("{}.tmp", warmup_dump(pid))] {
                let _ = std::fs::remove_file(dir.join(name));
            }
        }
    }

    /// Reads and removes `pid`'s warm-up dump, if it left one (one that cannot be read through
    /// judges every record of the next dump stale: none of them may be the process's own), and
    /// keeps it for the children `pid` forked meanwhile.
    fn take_warmup(&mut self, pid: u32) -> Option<Arc<PreviousDump>> {
        let path = self.warmup_dir.as_ref()?.join(warmup_dump(pid));
        let file = std::fs::File::open(&path).ok()?;
        let read = Arc::new(read_dump(file).unwrap_or_else(PreviousDump::unknown));
        let _ = std::fs::remove_file(&path);
        self.warmups.insert(pid, Arc::clone(&read));
        Some(read)
    }

    /// A process said hello: whatever `pid` held before is another program's (an exec, or a
    /// reused pid). A forked one (`parent`: its parent's pid and the GC count at the fork)
    /// starts from its parent's last dump when that dump was taken before the fork: no record
    /// in it is newer than the GC count then. A dump taken after the fork has newer ones (the
    /// round's own objects, made after its full GC while tracing, such as its `GC.stat`) and is
    /// not used: the objects the child kept and the parent freed, with their true records, are
    /// absent from it.
    pub fn process_started(&mut self, pid: u32, parent: Option<(u32, u64)>) {
        // (A warm-up dump another program left under the same pid before an exec is removed by
        // the agent before its hello: this one's may be there already, written before leakhunt
        // read the hello.)
        self.dumps.remove(&pid);
        self.warmups.remove(&pid);
        // A parent whose warm-up ended before its first round: the child's records up to the
        // fork are judged by that dump, read now if the parent's first round has not.
        if let Some((ppid, _)) = parent
            && let Some(warmup) = self.take_warmup(ppid)
        {
            self.dumps.insert(ppid, warmup);
        }
        // The parent's newest dump from before the fork: its last one, or its warm-up dump when
        // the fork came before the last one.
        let inherited = parent.and_then(|(ppid, gc_count)| {
            [self.dumps.get(&ppid), self.warmups.get(&ppid)]
                .into_iter()
                .flatten()
                .find(|dump| dump.newest_generation <= gc_count)
                .cloned()
        });
        if let Some(dump) = inherited {
            self.dumps.insert(pid, dump);
        }
    }
}

/// What one process's previous dump held: every object's (packed key, stamp), the ones whose
/// record was stale, and the highest generation of a true record.
#[derive(Debug, Default)]
pub struct PreviousDump {
    objects: Vec<(u64, u64)>,
    stale: Vec<(u64, u64)>,
    newest_generation: u64,
}

impl PreviousDump {
    /// A dump that was not read: every record of the next one counts as stale.
    pub fn unknown() -> Self {
        PreviousDump {
            newest_generation: u64::MAX,
            ..PreviousDump::default()
        }
    }

    /// How many sites its dump lost as stale.
    pub fn stale_sites(&self) -> usize {
        self.stale.len()
    }
}

/// Rewrites the lines of one dump, given the process's previous one (none: its first dump, whose
/// records are all true: the free hook is on from the start to the end of the first round).
pub struct StaleSiteFilter<'p> {
    previous: Option<&'p PreviousDump>,
    next: PreviousDump,
    generation_key: memmem::Finder<'static>,
    class_key: memmem::Finder<'static>,
}

impl<'p> StaleSiteFilter<'p> {
    pub fn new(previous: Option<&'p PreviousDump>) -> Self {
        StaleSiteFilter {
            previous,
            next: PreviousDump::default(),
            generation_key: memmem::Finder::new(GENERATION_KEY),
            class_key: memmem::Finder::new(CLASS_KEY),
        }
    }

    /// Appends the whole lines of `piece` to `out`, each stale site's keys removed. Only the
    /// lines with a generation key are looked at; one that does not parse is copied as it is
    /// (the readers report it).
    pub fn filter(&mut self, piece: &[u8], out: &mut Vec<u8>) {
        let mut copied = 0;
        let mut from = 0;
        while let Some(hit) = self.generation_key.find(&piece[from..]) {
            let hit = from + hit;
            let start = memrchr(b'\n', &piece[..hit]).map_or(0, |i| i + 1);
            let end = memchr(b'\n', &piece[hit..]).map_or(piece.len(), |i| hit + i);
            if let Some((cut_from, cut_to)) = self.stale_span(&piece[start..end], hit - start) {
                out.extend_from_slice(&piece[copied..start + cut_from]);
                copied = start + cut_to;
            }
            from = end;
        }
        out.extend_from_slice(&piece[copied..]);
    }

    /// Notes the object of `line` if it has an allocation record (one without cannot match a
    /// later object with one: the stamp holds the generation); for a stale record, the byte
    /// range of its site keys. Reads only the keys it needs: the whole line is parsed only when
    /// it does not start with the address and type.
    fn stale_span(&mut self, line: &[u8], at: usize) -> Option<(usize, usize)> {
        let (generation, to) = number(line, at + GENERATION_KEY.len()).ok()?;
        let (key, class) = match identity(&line[..at], &self.class_key) {
            Some(found) => found,
            None => {
                let rec = parse_line(line).ok()?;
                if rec.kind() != RecordKind::Object {
                    return None;
                }
                (pack_key(rec.address?, rec.obj_type()), rec.class)
            }
        };
        let stamp = object_stamp(class, Some(generation));
        self.next.objects.push((key, stamp));
        let stale = match self.previous {
            None => false,
            Some(p) => match p.objects.binary_search(&(key, stamp)) {
                Ok(_) => p.stale.binary_search(&(key, stamp)).is_ok(),
                Err(_) => generation <= p.newest_generation,
            },
        };
        if !stale {
            self.next.newest_generation = self.next.newest_generation.max(generation);
            return None;
        }
        self.next.stale.push((key, stamp));
        Some((site_start(&line[..at]), to))
    }

    /// What the next dump of the process is compared with.
    pub fn finish(mut self) -> PreviousDump {
        self.next.objects.sort_unstable();
        self.next.objects.dedup();
        self.next.objects.shrink_to_fit();
        self.next.stale.sort_unstable();
        self.next.stale.dedup();
        self.next
    }
}

/// Every object of a plain dump, its records all taken as true; None when it cannot be read
/// through.
fn read_dump(mut from: impl Read) -> Option<PreviousDump> {
    let mut filter = StaleSiteFilter::new(None);
    let (mut buf, mut out) = (vec![0u8; 1 << 20], Vec::new());
    let mut held = 0;
    loop {
        let n = from.read(&mut buf[held..]).ok()?;
        let end = held + n;
        // Whole lines only; the rest waits for the next read (a line longer than the buffer
        // grows it).
        let whole = if n == 0 {
            end
        } else {
            memrchr(b'\n', &buf[..end]).map_or(0, |i| i + 1)
        };
        filter.filter(&buf[..whole], &mut out);
        out.clear();
        buf.copy_within(whole..end, 0);
        held = end - whole;
        if n == 0 {
            return Some(filter.finish());
        }
        if held == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
    }
}

/// Inside a string value a quote is escaped, so the key cannot be matched there.
const GENERATION_KEY: &[u8] = b", \"generation\":";
const CLASS_KEY: &[u8] = b", \"class\":";

/// The object's packed key and class from the start of its line, `{"address":…, "type":…`,
/// then `"class"` wherever it comes before the generation. None when the line does not start
/// that way.
fn identity(head: &[u8], class_key: &memmem::Finder<'_>) -> Option<(u64, Option<u64>)> {
    let (address, obj_type) = parse_prefix(head)?;
    let class = class_key
        .find(head)
        .and_then(|p| hex_string(head, p + CLASS_KEY.len()).ok());
    Some((pack_key(address, obj_type), class.map(|(class, _)| class)))
}

/// Where the site keys before the generation start (`, "file":`, `, "line":` or `, "method":`,
/// in that order in CRuby's dumps): the generation key itself when there are none.
fn site_start(head: &[u8]) -> usize {
    [&b", \"file\":"[..], b", \"line\":", b", \"method\":"]
        .iter()
        .filter_map(|k| memmem::find(head, k))
        .min()
        .unwrap_or(head.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(address: u64, class: u64, site: Option<(&str, u64, u64)>) -> String {
        let site = site.map_or(String::new(), |(file, line, generation)| {
            format!(
                r#", "file":"{file}", "line":{line}, "method":"new", "generation":{generation}"#
            )
        });
        format!(
            r#"{{"address":"0x{address:x}", "type":"OBJECT", "class":"0x{class:x}", "ivars":1{site}, "memsize":40, "flags":{{"wb_protected":true}}}}"#
        ) + "\n"
    }

    fn filter(previous: Option<&PreviousDump>, dump: &str) -> (String, PreviousDump) {
        let mut f = StaleSiteFilter::new(previous);
        let mut out = Vec::new();
        // Two pieces, as the compressor hands them over.
        let cut = dump.find('\n').map_or(dump.len(), |i| i + 1);
        f.filter(&dump.as_bytes()[..cut], &mut out);
        f.filter(&dump.as_bytes()[cut..], &mut out);
        (String::from_utf8(out).unwrap(), f.finish())
    }

    #[test]
    fn a_first_dump_is_kept_as_it_is() {
        let dump = object(0x100, 0x50, Some(("boot.rb", 3, 7))) + &object(0x200, 0x50, None);
        let (out, previous) = filter(None, &dump);
        assert_eq!(out, dump);
        assert_eq!(previous.stale_sites(), 0);
    }

    #[test]
    fn a_record_no_newer_than_the_previous_dump_on_a_new_object_is_dropped() {
        let first = object(0x100, 0x50, Some(("boot.rb", 3, 7)))
            + &object(0x300, 0x50, Some(("round.rb", 9, 12)));
        let (_, previous) = filter(None, &first);
        // 0x100 now holds an object of another class (made while tracing was off) with the
        // Boot's record; 0x400 is new with an older record; 0x600 took the slot of an object
        // the round made for its dump (as new as the dump, dead since); 0x500 was made in a
        // later window (after the round's closing GC).
        let second = object(0x100, 0x60, Some(("boot.rb", 3, 7)))
            + &object(0x300, 0x50, Some(("round.rb", 9, 12)))
            + &object(0x400, 0x60, Some(("boot.rb", 4, 11)))
            + &object(0x600, 0x60, Some(("round.rb", 10, 12)))
            + &object(0x500, 0x60, Some(("late.rb", 5, 13)));
        let (out, next) = filter(Some(&previous), &second);
        let expected = object(0x100, 0x60, None)
            + &object(0x300, 0x50, Some(("round.rb", 9, 12)))
            + &object(0x400, 0x60, None)
            + &object(0x600, 0x60, None)
            + &object(0x500, 0x60, Some(("late.rb", 5, 13)));
        assert_eq!(out, expected);
        assert_eq!(next.stale_sites(), 3);
        // Still there in the dump after: still stale, though it matches its own last line.
        let (out, _) = filter(Some(&next), &second);
        assert_eq!(out, expected);
        // After a dump that could not be read, no site is kept but the ones the next dump
        // can judge.
        let unknown = PreviousDump::unknown();
        let (out, next) = filter(Some(&unknown), &second);
        assert!(!out.contains("\"file\""), "{out}");
        let (out, _) = filter(Some(&next), &second);
        assert!(!out.contains("\"file\""), "{out}");
    }

    #[test]
    fn a_child_forked_after_its_parents_dump_is_judged_against_it() {
        // A Boot made in warm-up, and the round's own object.
        let dump = object(0x100, 0x50, Some(("boot.rb", 3, 2)))
            + &object(0x180, 0x70, Some(("agent.rb", 1, 7)));
        let (_, parent) = filter(None, &dump);
        assert_eq!(parent.newest_generation, 7);
        let mut previous = StaleSites::default();
        previous.dumps.insert(10, Arc::new(parent));
        // Forked at GC count 9 (after the parent's dump), then at 6 (before it): that dump
        // cannot judge the second child.
        previous.process_started(11, Some((10, 9)));
        previous.process_started(12, Some((10, 6)));
        previous.process_started(13, None);
        assert_eq!(previous.dumps.keys().copied().collect::<Vec<_>>(), [10, 11]);
        // The slot of the parent's Boot, freed before the fork, holds a child's object of
        // another class.
        let child = object(0x100, 0x60, Some(("boot.rb", 3, 2)))
            + &object(0x200, 0x60, Some(("child.rb", 8, 9)));
        let (out, _) = filter(previous.dumps.get(&11).map(|d| d.as_ref()), &child);
        assert_eq!(
            out,
            object(0x100, 0x60, None) + &object(0x200, 0x60, Some(("child.rb", 8, 9)))
        );
        // The same pid saying hello again runs another program: its dumps start afresh.
        previous.process_started(11, None);
        assert!(!previous.dumps.contains_key(&11));
    }

    /// Hands out at most 7 bytes per read: lines cross reads.
    struct Trickle<'a>(&'a [u8]);

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(7);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_first_round_is_judged_against_the_warmup_dump() {
        let dir = tempfile::tempdir().unwrap();
        // Warm-up ended at GC count 3 with a Boot alive; an agent Array made in warm-up died
        // after, and its slot (0x200) went to an Array the program made untraced.
        let warmup = object(0x100, 0x50, Some(("boot.rb", 3, 2)))
            + &object(0x180, 0x60, Some(("agent.rb", 294, 3)));
        std::fs::write(dir.path().join(warmup_dump(10)), &warmup).unwrap();
        let read = read_dump(Trickle(warmup.as_bytes())).unwrap();
        assert_eq!((read.objects.len(), read.newest_generation), (2, 3));
        let mut previous = StaleSites::with_warmup_dir(dir.path());
        previous.dumps.insert(10, Arc::new(PreviousDump::default()));
        let judge = previous.take(10).unwrap();
        assert!(!dir.path().join(warmup_dump(10)).exists());
        let first = object(0x100, 0x50, Some(("boot.rb", 3, 2)))
            + &object(0x200, 0x60, Some(("agent.rb", 294, 1)))
            + &object(0x300, 0x60, Some(("window.rb", 5, 9)));
        let (out, _) = filter(Some(&judge), &first);
        assert_eq!(
            out,
            object(0x100, 0x50, Some(("boot.rb", 3, 2)))
                + &object(0x200, 0x60, None)
                + &object(0x300, 0x60, Some(("window.rb", 5, 9)))
        );
        // Without one, the last dump (here none).
        assert!(previous.take(10).is_none());
        // A child forked after its parent's warm-up dump, before the parent's first round: the
        // child is judged by it, and so is the parent's first round.
        std::fs::write(dir.path().join(warmup_dump(20)), &warmup).unwrap();
        // The child's own, written before leakhunt read its hello, stays for its first round.
        std::fs::write(dir.path().join(warmup_dump(21)), &warmup).unwrap();
        previous.process_started(21, Some((20, 5)));
        assert!(dir.path().join(warmup_dump(21)).exists());
        assert_eq!(previous.dumps.keys().copied().collect::<Vec<_>>(), [20, 21]);
        assert_eq!(previous.take(20).unwrap().newest_generation, 3);
        // A child forked before its parent's first round whose hello comes after that round:
        // judged by the parent's warm-up dump (generation 3), not by the round's (7).
        let (_, round) = filter(None, &object(0x100, 0x50, Some(("boot.rb", 3, 7))));
        previous.dumps.insert(20, Arc::new(round));
        previous.process_started(22, Some((20, 5)));
        assert_eq!(
            previous.dumps.get(&22).map(|d| d.newest_generation),
            Some(3)
        );
        // A process that ended before its first round: its warm-up dump goes.
        previous.process_ended(21);
        assert!(!dir.path().join(warmup_dump(21)).exists());
        assert!(!previous.dumps.contains_key(&21));
    }

    #[test]
    fn lines_of_other_shapes_are_copied() {
        let (_, previous) = filter(None, &object(0x100, 0x50, Some(("a.rb", 1, 20))));
        let root = "{\"type\":\"ROOT\", \"root\":\"vm\", \"references\":[\"0x100\"]}\n";
        let bad = "not json\n";
        let no_number =
            "{\"address\":\"0x900\", \"type\":\"OBJECT\", \"class\":\"0x60\", \"generation\":}\n";
        let dump = format!("{root}{bad}{no_number}");
        let (out, _) = filter(Some(&previous), &dump);
        assert_eq!(out, dump);
    }
}
