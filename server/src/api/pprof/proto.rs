//! The pprof profile format (`perftools.profiles.Profile`, the
//! `profile.proto` `go tool pprof` reads), the messages and field numbers
//! Cairn writes, and the CPU profile built from pprof-rs's samples.
//!
//! Go's CPU profile shape is kept: sample types `samples/count` and
//! `cpu/nanoseconds`, period type `cpu/nanoseconds`, period = 1 s / rate.
//! Each distinct function is one `Function` and one `Location` (pprof-rs
//! resolves addresses to symbols before we see them; the address itself is
//! not kept), innermost frame first.

use std::collections::HashMap;
use std::time::UNIX_EPOCH;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Profile {
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    #[prost(int64, tag = "7")]
    pub drop_frames: i64,
    #[prost(int64, tag = "8")]
    pub keep_frames: i64,
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    pub period: i64,
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueType {
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(int64, tag = "1")]
    pub key: i64,
    #[prost(int64, tag = "2")]
    pub str: i64,
    #[prost(int64, tag = "3")]
    pub num: i64,
    #[prost(int64, tag = "4")]
    pub num_unit: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Mapping {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    #[prost(int64, tag = "5")]
    pub filename: i64,
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Location {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    #[prost(uint64, tag = "3")]
    pub address: u64,
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
    #[prost(bool, tag = "5")]
    pub is_folded: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Line {
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    #[prost(int64, tag = "2")]
    pub line: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Function {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int64, tag = "2")]
    pub name: i64,
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    #[prost(int64, tag = "4")]
    pub filename: i64,
    #[prost(int64, tag = "5")]
    pub start_line: i64,
}

/// The string table: index 0 is the empty string, as the format requires.
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Strings {
        Strings {
            table: vec![String::new()],
            index: HashMap::from([(String::new(), 0)]),
        }
    }

    fn id(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = i64::try_from(self.table.len()).unwrap_or(i64::MAX);
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

/// One stack as sampled: frames innermost first, each a function name,
/// file and line; and how many times it was seen.
pub struct Stack {
    pub thread: String,
    pub frames: Vec<Frame>,
    pub count: i64,
}

pub struct Frame {
    pub name: String,
    pub system_name: String,
    pub file: String,
    pub line: i64,
}

/// The stacks of a pprof-rs report.
pub fn stacks(report: &pprof::Report) -> Vec<Stack> {
    report
        .data
        .iter()
        .map(|(frames, count)| {
            let all: Vec<Frame> = frames
                .frames
                .iter()
                .flatten()
                .map(|sym| Frame {
                    name: sym.name(),
                    system_name: sym.sys_name().into_owned(),
                    file: sym.filename().into_owned(),
                    line: i64::from(sym.lineno()),
                })
                .collect();
            Stack {
                thread: frames.thread_name_or_id(),
                frames: without_sampler(all),
                count: i64::try_from(*count).unwrap_or(0),
            }
        })
        .collect()
}

/// How deep the sampler's own frames can reach from the top of a stack.
const SAMPLER_FRAMES_MAX: usize = 12;

/// Drops the sampler's own frames (the unwinder, the SIGPROF handler and
/// the signal trampoline) from the top of a stack: they are in every
/// sample and say nothing about the program. Go's profiles start at the
/// interrupted function too.
fn without_sampler(frames: Vec<Frame>) -> Vec<Frame> {
    let is_sampler = |f: &Frame| {
        ["backtrace::", "pprof::", "<pprof::"]
            .iter()
            .any(|p| f.name.starts_with(p))
            || f.name == "__restore_rt"
    };
    match frames.iter().take(SAMPLER_FRAMES_MAX).rposition(is_sampler) {
        Some(last) => frames.into_iter().skip(last + 1).collect(),
        None => frames,
    }
}

/// A CPU profile in Go's shape from sampled stacks.
pub fn cpu_profile(
    stacks: &[Stack],
    frequency_hz: i64,
    start: std::time::SystemTime,
    duration: std::time::Duration,
) -> Profile {
    let mut strings = Strings::new();
    let period_ns = 1_000_000_000 / frequency_hz.max(1);
    let cpu_ns = ValueType {
        r#type: strings.id("cpu"),
        unit: strings.id("nanoseconds"),
    };
    let sample_type = vec![
        ValueType {
            r#type: strings.id("samples"),
            unit: strings.id("count"),
        },
        cpu_ns.clone(),
    ];
    let thread_key = strings.id("thread");
    let mut functions: Vec<Function> = Vec::new();
    let mut locations: Vec<Location> = Vec::new();
    let mut by_name: HashMap<(String, String, i64), u64> = HashMap::new();
    let mut samples = Vec::with_capacity(stacks.len());
    for stack in stacks {
        let mut location_id = Vec::with_capacity(stack.frames.len());
        for f in &stack.frames {
            let key = (f.name.clone(), f.file.clone(), f.line);
            let id = match by_name.get(&key) {
                Some(&id) => id,
                None => {
                    let id = u64::try_from(functions.len()).unwrap_or(u64::MAX) + 1;
                    functions.push(Function {
                        id,
                        name: strings.id(&f.name),
                        system_name: strings.id(&f.system_name),
                        filename: strings.id(&f.file),
                        start_line: 0,
                    });
                    locations.push(Location {
                        id,
                        line: vec![Line {
                            function_id: id,
                            line: f.line,
                        }],
                        ..Location::default()
                    });
                    by_name.insert(key, id);
                    id
                }
            };
            location_id.push(id);
        }
        samples.push(Sample {
            location_id,
            value: vec![stack.count, stack.count.saturating_mul(period_ns)],
            label: vec![Label {
                key: thread_key,
                str: strings.id(&stack.thread),
                ..Label::default()
            }],
        });
    }
    let time_nanos = start
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Profile {
        sample_type,
        sample: samples,
        location: locations,
        function: functions,
        string_table: strings.table,
        time_nanos,
        duration_nanos: i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX),
        period_type: Some(cpu_ns),
        period: period_ns,
        ..Profile::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use std::time::{Duration, SystemTime};

    fn frame(name: &str, line: i64) -> Frame {
        Frame {
            name: name.into(),
            system_name: format!("_ZN{name}E"),
            file: "src/x.rs".into(),
            line,
        }
    }

    #[test]
    fn the_samplers_frames_are_dropped() {
        let frames = vec![
            frame("backtrace::backtrace::trace_unsynchronized", 1),
            frame("Unknown", 0),
            frame("pprof::profiler::perf_signal_handler", 2),
            frame("__restore_rt", 0),
            frame("cairn::storage::put", 3),
            frame("main", 4),
        ];
        let names: Vec<String> = without_sampler(frames)
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["cairn::storage::put", "main"]);
        let plain = vec![frame("a", 1), frame("b", 2)];
        assert_eq!(without_sampler(plain).len(), 2);
    }

    #[test]
    fn go_cpu_profile_shape() {
        let stacks = vec![
            Stack {
                thread: "raft".into(),
                frames: vec![frame("inner", 10), frame("outer", 20)],
                count: 3,
            },
            Stack {
                thread: "cairn".into(),
                frames: vec![frame("other", 5), frame("outer", 20)],
                count: 1,
            },
        ];
        let p = cpu_profile(&stacks, 100, SystemTime::now(), Duration::from_secs(1));
        let p = Profile::decode(p.encode_to_vec().as_slice()).unwrap();
        let s = |i: i64| p.string_table[usize::try_from(i).unwrap()].as_str();
        assert_eq!(s(0), "");
        let types: Vec<(&str, &str)> = p
            .sample_type
            .iter()
            .map(|v| (s(v.r#type), s(v.unit)))
            .collect();
        assert_eq!(types, [("samples", "count"), ("cpu", "nanoseconds")]);
        assert_eq!(p.period, 10_000_000);
        assert_eq!(p.duration_nanos, 1_000_000_000);
        // `outer` is shared: three functions, three locations.
        assert_eq!(p.function.len(), 3);
        assert_eq!(p.location.len(), 3);
        let first = p.sample.iter().find(|x| x.value[0] == 3).unwrap();
        assert_eq!(first.value, [3, 30_000_000]);
        let names: Vec<&str> = first
            .location_id
            .iter()
            .map(|id| {
                let loc = &p.location[usize::try_from(*id).unwrap() - 1];
                let f = &p.function[usize::try_from(loc.line[0].function_id).unwrap() - 1];
                s(f.name)
            })
            .collect();
        assert_eq!(names, ["inner", "outer"]);
        assert_eq!(s(first.label[0].key), "thread");
        assert_eq!(s(first.label[0].str), "raft");
    }
}
