//! A small linearizability checker for one register with read, write,
//! create-if-absent, compare-and-swap and delete (Wing & Gong's search with
//! Lowe's memoisation, as in Knossos and Porcupine).
//!
//! A history is a list of operations, each with the real-time interval in
//! which it ran (invoke and complete timestamps) and its result. It is
//! linearizable if the operations can be put in one order that respects real
//! time (an operation that completed before another was invoked comes first)
//! and in which every result is what a single register would have answered.
//!
//! An operation whose outcome is unknown (a lost response) has its completion
//! at infinity and any result: it may take effect at any point after its
//! invocation, or never (linearized after everything, it changes nothing
//! anyone observed).

use std::collections::HashSet;

/// The register's value: absent, or one of the (unique) values written.
pub type Value = Option<u64>;

/// What an operation asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// A read.
    Read,
    /// An unconditional write.
    Write(u64),
    /// A write that lands only if the register is absent.
    Create(u64),
    /// A write that lands only if the register holds `expected`.
    Cas {
        /// The value the write is conditioned on.
        expected: u64,
        /// The value written.
        new: u64,
    },
    /// An unconditional delete.
    Delete,
}

/// What an operation answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ret {
    /// A read's value.
    Read(Value),
    /// Whether a conditional write (or any write or delete) landed.
    Done(bool),
    /// Unknown (the response was lost): the operation may or may not have happened.
    Unknown,
}

/// One operation of a history.
#[derive(Clone, Debug)]
pub struct Op {
    /// Which client (for messages only).
    pub client: usize,
    /// What it asked.
    pub call: Call,
    /// What it got.
    pub ret: Ret,
    /// When it was invoked (any monotonic unit, e.g. nanoseconds since a start `Instant`).
    pub invoke: u64,
    /// When it completed; ignored for [`Ret::Unknown`] (completion at infinity).
    pub complete: u64,
}

/// The register's answer to `call` in `state`: (result, next state).
fn step(state: Value, call: Call) -> (Ret, Value) {
    match call {
        Call::Read => (Ret::Read(state), state),
        Call::Write(v) => (Ret::Done(true), Some(v)),
        Call::Create(v) => match state {
            None => (Ret::Done(true), Some(v)),
            Some(_) => (Ret::Done(false), state),
        },
        Call::Cas { expected, new } => {
            if state == Some(expected) {
                (Ret::Done(true), Some(new))
            } else {
                (Ret::Done(false), state)
            }
        }
        Call::Delete => (Ret::Done(true), None),
    }
}

fn accepts(observed: Ret, model: Ret) -> bool {
    observed == Ret::Unknown || observed == model
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    op: usize,
    is_call: bool,
    // Doubly linked list over the entries still in play.
    prev: usize,
    next: usize,
}

/// The result of [`check`].
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A valid order exists (the ops' indices, definite ones at least).
    Linearizable(Vec<usize>),
    /// No order works.
    NotLinearizable,
}

/// Checks a history against a register that starts at `initial`.
pub fn check(initial: Value, ops: &[Op]) -> Verdict {
    let n = ops.len();
    if n == 0 {
        return Verdict::Linearizable(Vec::new());
    }
    // Events sorted by time; calls before returns at equal times (so touching
    // intervals count as concurrent: the conservative choice for timestamps
    // taken outside the operation).
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.invoke, true, i));
        let end = if op.ret == Ret::Unknown {
            u64::MAX
        } else {
            op.complete.max(op.invoke)
        };
        events.push((end, false, i));
    }
    events.sort_by_key(|&(t, is_call, i)| (t, !is_call, i));
    // Entry 0 is the head sentinel; entries 1..=2n are the events.
    let head = 0usize;
    let mut entries = vec![Entry {
        op: usize::MAX,
        is_call: false,
        prev: usize::MAX,
        next: 1,
    }];
    let mut call_of = vec![0usize; n];
    let mut ret_of = vec![0usize; n];
    for (k, &(_, is_call, op)) in events.iter().enumerate() {
        let idx = k + 1;
        entries.push(Entry {
            op,
            is_call,
            prev: idx - 1,
            next: if k + 1 < events.len() {
                idx + 1
            } else {
                usize::MAX
            },
        });
        if is_call {
            call_of[op] = idx;
        } else {
            ret_of[op] = idx;
        }
    }
    let unlink = |entries: &mut Vec<Entry>, i: usize| {
        let (p, nx) = (entries[i].prev, entries[i].next);
        entries[p].next = nx;
        if nx != usize::MAX {
            entries[nx].prev = p;
        }
    };
    let relink = |entries: &mut Vec<Entry>, i: usize| {
        let (p, nx) = (entries[i].prev, entries[i].next);
        entries[p].next = i;
        if nx != usize::MAX {
            entries[nx].prev = i;
        }
    };

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, Value)> = HashSet::new();
    // (op, state before it)
    let mut stack: Vec<(usize, Value)> = Vec::new();
    let mut state = initial;
    let mut cur = entries[head].next;
    loop {
        if cur == usize::MAX {
            // Every entry is gone: all ops linearized.
            break;
        }
        let e = entries[cur];
        if !e.is_call && ops[e.op].ret == Ret::Unknown {
            // Only unknown-outcome ops are left (their returns are at infinity
            // and sort last): they may simply not have happened.
            break;
        }
        if e.is_call {
            let (model, next_state) = step(state, ops[e.op].call);
            let mut done = false;
            if accepts(ops[e.op].ret, model) {
                linearized[e.op / 64] |= 1 << (e.op % 64);
                if cache.insert((linearized.clone(), next_state)) {
                    stack.push((e.op, state));
                    state = next_state;
                    unlink(&mut entries, call_of[e.op]);
                    unlink(&mut entries, ret_of[e.op]);
                    cur = entries[head].next;
                    done = true;
                } else {
                    linearized[e.op / 64] &= !(1 << (e.op % 64));
                }
            }
            if !done {
                cur = e.next;
            }
        } else {
            // A return whose op could not be linearized yet: backtrack.
            let Some((op, before)) = stack.pop() else {
                return Verdict::NotLinearizable;
            };
            state = before;
            linearized[op / 64] &= !(1 << (op % 64));
            relink(&mut entries, ret_of[op]);
            relink(&mut entries, call_of[op]);
            cur = entries[call_of[op]].next;
        }
    }
    Verdict::Linearizable(stack.into_iter().map(|(op, _)| op).collect())
}

/// Panics with the history if it is not linearizable.
pub fn assert_linearizable(what: &str, initial: Value, ops: &[Op]) {
    if check(initial, ops) == Verdict::NotLinearizable {
        let mut lines = String::new();
        let mut sorted: Vec<&Op> = ops.iter().collect();
        sorted.sort_by_key(|o| o.invoke);
        for o in sorted {
            let end = if o.ret == Ret::Unknown {
                "∞".to_string()
            } else {
                o.complete.to_string()
            };
            lines.push_str(&format!(
                "  client {} [{} .. {}] {:?} -> {:?}\n",
                o.client, o.invoke, end, o.call, o.ret
            ));
        }
        panic!(
            "{what}: history of {} ops is not linearizable:\n{lines}",
            ops.len()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: usize, call: Call, ret: Ret, invoke: u64, complete: u64) -> Op {
        Op {
            client,
            call,
            ret,
            invoke,
            complete,
        }
    }

    fn lin(ops: &[Op]) -> bool {
        matches!(check(None, ops), Verdict::Linearizable(_))
    }

    #[test]
    fn empty_and_sequential_histories() {
        assert!(lin(&[]));
        let h = [
            op(0, Call::Read, Ret::Read(None), 0, 1),
            op(0, Call::Create(1), Ret::Done(true), 2, 3),
            op(0, Call::Read, Ret::Read(Some(1)), 4, 5),
            op(
                0,
                Call::Cas {
                    expected: 1,
                    new: 2,
                },
                Ret::Done(true),
                6,
                7,
            ),
            op(
                0,
                Call::Cas {
                    expected: 1,
                    new: 3,
                },
                Ret::Done(false),
                8,
                9,
            ),
            op(0, Call::Delete, Ret::Done(true), 10, 11),
            op(0, Call::Read, Ret::Read(None), 12, 13),
        ];
        assert!(lin(&h));
    }

    #[test]
    fn a_sequential_stale_read_is_rejected() {
        let h = [
            op(0, Call::Write(1), Ret::Done(true), 0, 1),
            op(0, Call::Write(2), Ret::Done(true), 2, 3),
            op(1, Call::Read, Ret::Read(Some(1)), 4, 5),
        ];
        assert!(!lin(&h));
    }

    #[test]
    fn concurrent_ops_may_be_ordered_either_way() {
        // The read overlaps the write: it may see the old or the new value.
        for seen in [None, Some(1)] {
            let h = [
                op(0, Call::Write(1), Ret::Done(true), 0, 10),
                op(1, Call::Read, Ret::Read(seen), 5, 6),
            ];
            assert!(lin(&h), "{seen:?}");
        }
        // But not a value nobody wrote.
        let h = [
            op(0, Call::Write(1), Ret::Done(true), 0, 10),
            op(1, Call::Read, Ret::Read(Some(7)), 5, 6),
        ];
        assert!(!lin(&h));
    }

    #[test]
    fn reads_may_not_go_back_in_time() {
        // Two sequential reads during one write: new then old is impossible.
        let h = [
            op(0, Call::Write(1), Ret::Done(true), 0, 100),
            op(1, Call::Read, Ret::Read(Some(1)), 10, 20),
            op(1, Call::Read, Ret::Read(None), 30, 40),
        ];
        assert!(!lin(&h));
        let ok = [
            op(0, Call::Write(1), Ret::Done(true), 0, 100),
            op(1, Call::Read, Ret::Read(None), 10, 20),
            op(1, Call::Read, Ret::Read(Some(1)), 30, 40),
        ];
        assert!(lin(&ok));
    }

    #[test]
    fn two_cas_from_one_value_cannot_both_win() {
        let h = [
            op(0, Call::Create(1), Ret::Done(true), 0, 1),
            op(
                1,
                Call::Cas {
                    expected: 1,
                    new: 2,
                },
                Ret::Done(true),
                2,
                10,
            ),
            op(
                2,
                Call::Cas {
                    expected: 1,
                    new: 3,
                },
                Ret::Done(true),
                3,
                11,
            ),
        ];
        assert!(!lin(&h), "a lost update must be caught");
        let ok = [
            op(0, Call::Create(1), Ret::Done(true), 0, 1),
            op(
                1,
                Call::Cas {
                    expected: 1,
                    new: 2,
                },
                Ret::Done(true),
                2,
                10,
            ),
            op(
                2,
                Call::Cas {
                    expected: 1,
                    new: 3,
                },
                Ret::Done(false),
                3,
                11,
            ),
            op(0, Call::Read, Ret::Read(Some(2)), 12, 13),
        ];
        assert!(lin(&ok));
    }

    #[test]
    fn two_creates_cannot_both_win() {
        let h = [
            op(0, Call::Create(1), Ret::Done(true), 0, 10),
            op(1, Call::Create(2), Ret::Done(true), 1, 11),
        ];
        assert!(!lin(&h));
    }

    #[test]
    fn a_failed_cas_needs_a_reason() {
        // Nobody changed the value, yet the CAS failed.
        let h = [
            op(0, Call::Create(1), Ret::Done(true), 0, 1),
            op(
                1,
                Call::Cas {
                    expected: 1,
                    new: 2,
                },
                Ret::Done(false),
                2,
                3,
            ),
        ];
        assert!(!lin(&h));
        // With a concurrent write it may fail.
        let h = [
            op(0, Call::Create(1), Ret::Done(true), 0, 1),
            op(
                1,
                Call::Cas {
                    expected: 1,
                    new: 2,
                },
                Ret::Done(false),
                2,
                5,
            ),
            op(2, Call::Write(3), Ret::Done(true), 3, 4),
        ];
        assert!(lin(&h));
    }

    #[test]
    fn unknown_outcomes_may_or_may_not_have_happened() {
        // A lost write that was later observed.
        let seen = [
            op(0, Call::Write(1), Ret::Unknown, 0, 0),
            op(1, Call::Read, Ret::Read(Some(1)), 10, 11),
        ];
        assert!(lin(&seen));
        // A lost write never observed.
        let unseen = [
            op(0, Call::Write(1), Ret::Unknown, 0, 0),
            op(1, Call::Read, Ret::Read(None), 10, 11),
        ];
        assert!(lin(&unseen));
        // But it cannot take effect before it was invoked.
        let early = [
            op(1, Call::Read, Ret::Read(Some(1)), 0, 1),
            op(0, Call::Write(1), Ret::Unknown, 5, 5),
        ];
        assert!(!lin(&early));
        // And it can happen only once: seen, gone, seen again is impossible.
        let twice = [
            op(0, Call::Write(1), Ret::Unknown, 0, 0),
            op(1, Call::Read, Ret::Read(Some(1)), 10, 11),
            op(1, Call::Write(2), Ret::Done(true), 12, 13),
            op(1, Call::Read, Ret::Read(Some(1)), 14, 15),
        ];
        assert!(!lin(&twice));
    }

    #[test]
    fn backtracking_finds_the_only_order() {
        // Three overlapping writes and reads that pin one order: 2, 3, 1.
        let h = [
            op(0, Call::Write(1), Ret::Done(true), 0, 50),
            op(1, Call::Write(2), Ret::Done(true), 0, 50),
            op(2, Call::Write(3), Ret::Done(true), 0, 50),
            op(3, Call::Read, Ret::Read(Some(2)), 1, 10),
            op(3, Call::Read, Ret::Read(Some(3)), 11, 20),
            op(3, Call::Read, Ret::Read(Some(1)), 60, 70),
        ];
        match check(None, &h) {
            Verdict::Linearizable(order) => {
                let writes: Vec<usize> = order.into_iter().filter(|&i| i < 3).collect();
                assert_eq!(writes, vec![1, 2, 0]);
            }
            Verdict::NotLinearizable => panic!("should be linearizable"),
        }
        // Swap the last read: now 1 must come before 3 and after it: impossible.
        let mut bad = h.clone();
        bad[5].ret = Ret::Read(Some(2));
        assert!(!lin(&bad));
    }

    #[test]
    fn a_long_concurrent_history_is_checked_quickly() {
        // 8 clients × 40 rounds of overlapping CAS on one value: one wins per round.
        let mut h = vec![op(0, Call::Create(0), Ret::Done(true), 0, 1)];
        let (mut prev, mut t) = (0u64, 2u64);
        for round in 0..40u64 {
            let winner = round % 8;
            let mut winner_new = prev;
            for c in 0..8u64 {
                let new = round * 8 + c + 1;
                let won = c == winner;
                if won {
                    winner_new = new;
                }
                let cas = Call::Cas {
                    expected: prev,
                    new,
                };
                h.push(op(c as usize, cas, Ret::Done(won), t, t + 10));
            }
            h.push(op(
                9,
                Call::Read,
                Ret::Read(Some(winner_new)),
                t + 11,
                t + 12,
            ));
            prev = winner_new;
            t += 20;
        }
        let started = std::time::Instant::now();
        assert!(matches!(check(None, &h), Verdict::Linearizable(_)));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // Flip one failed CAS to a success: two winners in one round.
        let mut bad = h.clone();
        let idx = bad
            .iter()
            .position(|o| matches!(o.call, Call::Cas { .. }) && o.ret == Ret::Done(false))
            .unwrap();
        bad[idx].ret = Ret::Done(true);
        assert!(!lin(&bad));
    }
}
