//! The extension module `analyzer._core`: the capture reader, in batches.
//!
//! One call returns up to `max` TCP segments as the tuples the Python reader yields
//! (`(ts, key, seq, ack, flags, payload)`), so the Python side pays one call per batch
//! rather than a record header unpack, a slice and a struct unpack per packet.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Seek, SeekFrom};
// Paths as the OS has them (a file name need not be UTF-8): PyO3 takes them through os.fsencode.
use std::path::PathBuf;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::decode::{decode_frame, known_linktype, Decoded};
use crate::pcap::{Damage, PcapRecords};

/// `(ts, key, seq, ack, flags, payload)`, as the Python reader yields a segment.
fn segment_tuple<'py>(py: Python<'py>, ts: f64, s: &crate::decode::Segment<'_>) -> PyResult<Bound<'py, PyTuple>> {
    let klen = s.addrs.len() + 4;
    let key = PyBytes::new_with(py, klen, |b| {
        b[..klen - 4].copy_from_slice(s.addrs);
        b[klen - 4..].copy_from_slice(s.ports);
        Ok(())
    })?;
    PyTuple::new(
        py,
        [
            ts.into_pyobject(py)?.into_any(),
            key.into_any(),
            s.seq.into_pyobject(py)?.into_any(),
            s.ack.into_pyobject(py)?.into_any(),
            s.flags.into_pyobject(py)?.into_any(),
            PyBytes::new(py, s.payload).into_any(),
        ],
    )
}

/// Decode one frame of either file format: a TCP segment is appended to `out` (true), an IP
/// fragment counted, anything else skipped.
fn push_frame(
    py: Python<'_>,
    out: &Bound<'_, PyList>,
    linktype: u32,
    data: &[u8],
    ts: f64,
    tcp_segments: &mut u64,
    fragments: &mut u64,
) -> PyResult<bool> {
    match decode_frame(linktype, data) {
        Decoded::Tcp(s) => {
            out.append(segment_tuple(py, ts, &s)?)?;
            *tcp_segments += 1;
            Ok(true)
        }
        Decoded::Fragment => {
            *fragments += 1;
            Ok(false)
        }
        Decoded::Other => Ok(false),
    }
}

#[pyclass(module = "analyzer._core")]
struct PcapSegments {
    records: PcapRecords<File>,
    linktype: u32,
    scale: f64,
    #[pyo3(get)]
    tcp_segments: u64,
    #[pyo3(get)]
    fragments: u64,
    last_ts: Option<f64>,
}

#[pymethods]
impl PcapSegments {
    /// The records of a classic pcap file from byte `start` on (its header read by the caller).
    #[new]
    #[pyo3(signature = (path, start, big_endian, nano, linktype, snaplen))]
    fn new(path: PathBuf, start: u64, big_endian: bool, nano: bool, linktype: u32, snaplen: u32) -> PyResult<Self> {
        if !known_linktype(linktype) {
            return Err(PyValueError::new_err(format!("link type {linktype} is not the core's")));
        }
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(start))?;
        Ok(PcapSegments {
            records: PcapRecords::new(file, start, big_endian, snaplen),
            linktype,
            scale: if nano { 1e-9 } else { 1e-6 },
            tcp_segments: 0,
            fragments: 0,
            last_ts: None,
        })
    }

    /// Up to `max` segments, in file order; an empty list at the end (or at damage).
    fn read<'py>(&mut self, py: Python<'py>, max: usize) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        let mut n = 0;
        while n < max {
            let Some(record) = self.records.next_record()? else { break };
            // The same float operations as the Python reader: sec + frac * scale.
            let ts = record.sec as f64 + record.frac as f64 * self.scale;
            if push_frame(py, &out, self.linktype, record.data, ts, &mut self.tcp_segments, &mut self.fragments)? {
                n += 1;
            }
        }
        Ok(out)
    }

    /// Up to `max` segments, in file order, each handed to Python as it is read: the ones the
    /// lane takes (see `FastLane`) as `fast(flow, index, events, ts, nbytes, big)`, which
    /// returns the deadline heap's head when it set a deadline (else None); every other one as `slow(ts, key, seq, ack, flags,
    /// payload)` (tcp.py's `segment` tuple), which returns the tracker's horizon
    /// `(now, head, oldest tombstone or None, start window time or None)`; a segment the lane
    /// would take but for its time goes to `time(ts)` first (which returns the horizon too).
    /// Returns how many
    /// segments were handed over (0 at the end of the file or at damage).
    fn run(&mut self, py: Python<'_>, lane: &Bound<'_, FastLane>, slow: &Bound<'_, PyAny>, fast: &Bound<'_, PyAny>,
           time: &Bound<'_, PyAny>, max: usize) -> PyResult<usize> {
        let calls = LaneCalls { slow, fast, time };
        let mut n = 0;
        while n < max {
            let Some(record) = self.records.next_record()? else { break };
            let ts = record.sec as f64 + record.frac as f64 * self.scale;
            if lane_frame(py, lane, &calls, self.linktype, record.data, ts, &mut self.tcp_segments, &mut self.fragments)? {
                n += 1;
                self.last_ts = Some(ts);
            }
        }
        Ok(n)
    }

    /// The time of the last segment `run` handed over (None before the first).
    #[getter]
    fn last_ts(&self) -> Option<f64> {
        self.last_ts
    }

    #[getter]
    fn packets(&self) -> u64 {
        self.records.packets
    }

    #[getter]
    fn position(&self) -> u64 {
        self.records.position()
    }

    #[getter]
    fn bad_records(&self) -> u64 {
        self.records.bad_records
    }

    /// `(file offset, record number, caplen)` of the first empty or over-long record, or None.
    #[getter]
    fn first_bad(&self) -> Option<(u64, u64, u32)> {
        self.records.first_bad.map(|b| (b.offset, b.record, b.caplen))
    }

    /// Where reading stopped early: `(kind, offset, record, have, caplen)` or None; kind is
    /// "header" (inside a record header), "record" (inside a record) or "length" (absurd length).
    #[getter]
    fn damage(&self) -> Option<(&'static str, u64, u64, usize, u32)> {
        self.records.damage.as_ref().map(|d| match *d {
            Damage::TruncatedHeader { offset, record, have } => ("header", offset, record, have, 16),
            Damage::TruncatedRecord { offset, record, have, caplen } => ("record", offset, record, have, caplen),
            Damage::BadLength { offset, record, caplen } => ("length", offset, record, 0, caplen),
        })
    }
}

/// One frame of a known link type decoded as the Python `link_offset` + `decode_ip` do:
/// `(key, seq, ack, flags, payload)`, `()` for a TCP fragment, None otherwise. For the tests.
#[pyfunction]
fn decode_frame_py<'py>(py: Python<'py>, linktype: u32, frame: &[u8]) -> PyResult<PyObject> {
    Ok(match decode_frame(linktype, frame) {
        Decoded::Tcp(s) => (PyBytes::new(py, &s.key()), s.seq, s.ack, s.flags, PyBytes::new(py, s.payload))
            .into_pyobject(py)?
            .into_any()
            .unbind(),
        Decoded::Fragment => PyTuple::empty(py).into_any().unbind(),
        Decoded::Other => py.None(),
    })
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("IMPLEMENTATION", "rust")?;
    m.add("VERSION", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<PcapSegments>()?;
    m.add_class::<PcapngSegments>()?;
    m.add_function(wrap_pyfunction!(decode_frame_py, m)?)?;
    m.add_class::<PyProtocolState>()?;
    m.add_class::<PyCommandReader>()?;
    m.add_function(wrap_pyfunction!(tables, m)?)?;
    m.add_function(wrap_pyfunction!(decode_reads, m)?)?;
    m.add_class::<JsonFormatter>()?;
    m.add_class::<FastLane>()?;
    Ok(())
}

// -- the MSNP reader ------------------------------------------------------------------

use pyo3::sync::GILOnceCell;
use pyo3::types::{PyInt, PyString};

use crate::reader::{CommandReader as Reader, Event, Num, ProtocolState as State, DEFAULT_MAX_LINE, DEFAULT_MAX_PAYLOAD};

/// The event classes of `analyzer.msnp.events`, so both readers return the same objects.
struct EventTypes {
    command: PyObject,
    skipped: PyObject,
    anomaly: PyObject,
    c2s: PyObject,
    s2c: PyObject,
    /// The known command codes as interned Python strings: a command's `cmd` is one of these
    /// (as the Python reader's table gives it), not a new string per command. The strings
    /// last as long as what holds them: a connection's command counts keep one per code, and
    /// thousands of connections are open at once on a busy server.
    codes: HashMap<&'static [u8], PyObject>,
}

static EVENT_TYPES: GILOnceCell<EventTypes> = GILOnceCell::new();

fn event_types(py: Python<'_>) -> PyResult<&EventTypes> {
    EVENT_TYPES.get_or_try_init(py, || {
        let m = py.import("analyzer.msnp.events")?;
        Ok(EventTypes {
            command: m.getattr("Command")?.unbind(),
            skipped: m.getattr("Skipped")?.unbind(),
            anomaly: m.getattr("Anomaly")?.unbind(),
            c2s: m.getattr("C2S")?.unbind(),
            s2c: m.getattr("S2C")?.unbind(),
            codes: crate::tables::KNOWN_COMMANDS
                .iter()
                .map(|c| (c.as_bytes(), PyString::intern(py, c).into_any().unbind()))
                .collect(),
        })
    })
}

fn num_to_py(py: Python<'_>, n: &Num) -> PyResult<PyObject> {
    Ok(match &n.big {
        None => n.value.into_pyobject(py)?.into_any().unbind(),
        Some(text) => py.get_type::<PyInt>().call1((text.as_ref(),))?.unbind(),
    })
}

fn num_from_py(value: &Bound<'_, PyAny>) -> PyResult<Num> {
    let text: String = value.str()?.extract()?;
    if text.is_empty() || !text.bytes().all(|c| c.is_ascii_digit()) {
        return Err(PyValueError::new_err(format!("not a protocol version: {text}")));
    }
    Ok(Num::parse(text.as_bytes()))
}

/// `analyzer.msnp.reader.ProtocolState`, shared by the two compiled readers of a connection.
#[pyclass(module = "analyzer._core", name = "ProtocolState")]
struct PyProtocolState {
    inner: State,
}

#[pymethods]
impl PyProtocolState {
    #[new]
    #[pyo3(signature = (version=None))]
    fn new(version: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let version = version.map(num_from_py).transpose()?;
        Ok(PyProtocolState { inner: State { version, offered: Vec::new(), min_version: 0, max_version: 0 } })
    }

    #[getter]
    fn version(&self, py: Python<'_>) -> PyResult<Option<PyObject>> {
        self.inner.version.as_ref().map(|v| num_to_py(py, v)).transpose()
    }

    #[setter]
    fn set_version(&mut self, value: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        self.inner.version = value.map(num_from_py).transpose()?;
        Ok(())
    }

    #[getter]
    fn offered(&self, py: Python<'_>) -> PyResult<Vec<PyObject>> {
        self.inner.offered.iter().map(|v| num_to_py(py, v)).collect()
    }

    #[setter]
    fn set_offered(&mut self, value: Vec<Bound<'_, PyAny>>) -> PyResult<()> {
        self.inner.offered = value.iter().map(num_from_py).collect::<PyResult<_>>()?;
        Ok(())
    }

    #[getter]
    fn min_version(&self) -> u64 {
        self.inner.min_version
    }

    #[setter]
    fn set_min_version(&mut self, value: u64) {
        self.inner.min_version = value;
    }

    #[getter]
    fn max_version(&self) -> u64 {
        self.inner.max_version
    }

    #[setter]
    fn set_max_version(&mut self, value: u64) {
        self.inner.max_version = value;
    }

    #[getter]
    fn effective(&self, py: Python<'_>) -> PyResult<Option<PyObject>> {
        self.inner.effective().map(|v| num_to_py(py, v)).transpose()
    }
}

/// `analyzer.msnp.reader.CommandReader` in Rust: the same contract, the same event objects.
///
/// Timestamps are the caller's objects: each call's `ts` gets a generation number that the
/// Rust reader carries, so an event comes back with the very object it went in with (a
/// command finished by a later read takes that read's time, as in the reference).
#[pyclass(module = "analyzer._core", name = "CommandReader")]
struct PyCommandReader {
    // Thousands are open at once on a busy server's capture (two per connection): only what
    // an idle reader needs is kept here. The direction is the reader's `client` flag (the
    // `direction` getter gives the shared 'c2s'/'s2c' string), and each call's events are
    // made in a Vec of its own (a Vec kept here costs every reader 24 bytes, idle or not).
    reader: Reader<u64>,
    #[pyo3(get)]
    state: Py<PyProtocolState>,
    generation: u64,
    partial_ts: Option<(u64, PyObject)>,
}

impl PyCommandReader {
    /// `feed` on bytes the caller holds (the TCP lane feeds a segment's payload from the
    /// capture buffer: no bytes object per segment).
    fn feed_bytes<'py>(&mut self, py: Python<'py>, bytes: &[u8], ts: Option<PyObject>) -> PyResult<Bound<'py, PyList>> {
        let tag = self.begin(&ts);
        let state = self.state.clone_ref(py);
        let mut state = state.borrow_mut(py);
        let mut out = Vec::new();
        self.reader.feed(&mut state.inner, bytes, tag, &mut out);
        drop(state);
        self.finish(py, ts, out)
    }

    fn begin(&mut self, ts: &Option<PyObject>) -> Option<u64> {
        self.generation += 1;
        ts.as_ref().map(|_| self.generation)
    }

    fn finish<'py>(&mut self, py: Python<'py>, ts: Option<PyObject>, events: Vec<Event<u64>>)
        -> PyResult<Bound<'py, PyList>> {
        let types = event_types(py)?;
        let generation = self.generation;
        let resolve = |tag: Option<u64>| -> PyObject {
            match tag {
                None => py.None(),
                Some(g) if g == generation => ts.as_ref().map_or_else(|| py.None(), |o| o.clone_ref(py)),
                Some(g) => match &self.partial_ts {
                    Some((pg, o)) if *pg == g => o.clone_ref(py),
                    _ => py.None(),
                },
            }
        };
        let out = PyList::empty(py);
        let direction = if self.reader.client { types.c2s.bind(py) } else { types.s2c.bind(py) };
        for event in events {
            let item = match event {
                Event::Command(c) => {
                    let args = PyList::empty(py);
                    for &(a, b) in &c.args {
                        args.append(PyBytes::new(py, &c.line[a as usize..b as usize]))?;
                    }
                    let trid = c.trid.as_ref().map(|t| num_to_py(py, t)).transpose()?;
                    let payload_len = c.payload_len.as_ref().map(|t| num_to_py(py, t)).transpose()?;
                    let payload = c.payload.as_ref().map(|p| PyBytes::new(py, p));
                    let code = match types.codes.get(c.code.as_bytes()) {
                        Some(known) => known.clone_ref(py),
                        None => PyString::new(py, &c.code).into_any().unbind(),
                    };
                    types.command.bind(py).call1((
                        direction,
                        code,
                        trid,
                        args,
                        PyBytes::new(py, &c.line),
                        payload,
                        payload_len,
                        c.offset,
                        resolve(c.ts),
                    ))?
                }
                Event::Skipped { raw, offset, ts } => {
                    types.skipped.bind(py).call1((direction, PyBytes::new(py, &raw), offset, resolve(ts)))?
                }
                Event::Anomaly { name, detail, offset, ts, trid } => {
                    let trid = trid.as_ref().map(|t| num_to_py(py, t)).transpose()?;
                    // The name interned, as the Python reader's literals are: a connection's anomaly counts keep it.
                    let name = PyString::intern(py, name);
                    types.anomaly.bind(py).call1((name, detail, direction, offset, resolve(ts), trid))?
                }
            };
            out.append(item)?;
        }
        // Keep the time of a command still waiting for its payload (it may come from this call).
        self.partial_ts = match self.reader.partial_ts() {
            None => None,
            Some(g) if g == generation => ts.map(|o| (g, o)),
            Some(_) => self.partial_ts.take(),
        };
        Ok(out)
    }
}

#[pymethods]
impl PyCommandReader {
    #[new]
    #[pyo3(signature = (direction, state=None, *, max_line=DEFAULT_MAX_LINE, max_payload=DEFAULT_MAX_PAYLOAD))]
    fn new(py: Python<'_>, direction: &Bound<'_, PyAny>, state: Option<Py<PyProtocolState>>, max_line: usize,
           max_payload: u64) -> PyResult<Self> {
        let types = event_types(py)?;
        let client = if direction.eq(types.c2s.bind(py))? {
            true
        } else if direction.eq(types.s2c.bind(py))? {
            false
        } else {
            return Err(PyValueError::new_err("direction must be 'c2s' or 's2c'"));
        };
        let state = match state {
            Some(s) => s,
            None => Py::new(py, PyProtocolState { inner: State::default() })?,
        };
        Ok(PyCommandReader {
            reader: Reader::new(client, max_line, max_payload),
            state,
            generation: 0,
            partial_ts: None,
        })
    }

    #[pyo3(signature = (data, ts=None))]
    fn feed<'py>(&mut self, py: Python<'py>, data: &Bound<'py, PyAny>, ts: Option<PyObject>)
        -> PyResult<Bound<'py, PyList>> {
        let owned;
        let bytes: &[u8] = match data.downcast::<PyBytes>() {
            Ok(b) => b.as_bytes(),
            Err(_) => {
                owned = py.get_type::<PyBytes>().call1((data,))?.downcast_into::<PyBytes>()?;
                owned.as_bytes()
            }
        };
        self.feed_bytes(py, bytes, ts)
    }

    #[pyo3(signature = (ts=None))]
    fn close<'py>(&mut self, py: Python<'py>, ts: Option<PyObject>) -> PyResult<Bound<'py, PyList>> {
        let tag = self.begin(&ts);
        let mut out = Vec::new();
        self.reader.close(tag, &mut out);
        self.finish(py, ts, out)
    }

    #[pyo3(signature = (size, ts=None))]
    fn gap<'py>(&mut self, py: Python<'py>, size: u64, ts: Option<PyObject>) -> PyResult<Bound<'py, PyList>> {
        let tag = self.begin(&ts);
        let mut out = Vec::new();
        self.reader.gap(size, tag, &mut out);
        self.finish(py, ts, out)
    }

    /// 'c2s' or 's2c' (the strings of analyzer.msnp.events).
    #[getter]
    fn direction(&self, py: Python<'_>) -> PyResult<PyObject> {
        let types = event_types(py)?;
        Ok(if self.reader.client { types.c2s.clone_ref(py) } else { types.s2c.clone_ref(py) })
    }

    #[getter]
    fn offset(&self) -> u64 {
        self.reader.offset()
    }

    #[getter]
    fn pending(&self) -> usize {
        self.reader.pending()
    }

    #[getter]
    fn max_line(&self) -> usize {
        self.reader.max_line
    }

    #[getter]
    fn max_payload(&self) -> u64 {
        self.reader.max_payload
    }
}

/// The crate's protocol tables, for the test that checks them against `tables.py`.
#[pyfunction]
fn tables(py: Python<'_>) -> PyResult<Bound<'_, pyo3::types::PyDict>> {
    use crate::tables as t;
    let d = pyo3::types::PyDict::new(py);
    let sorted = |list: &[&str]| {
        let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    };
    let map = |list: &[(&str, u64)]| -> Bound<'_, pyo3::types::PyDict> {
        let m = pyo3::types::PyDict::new(py);
        for (k, v) in list {
            m.set_item(k, v).expect("a str key and an int value");
        }
        m
    };
    d.set_item("KNOWN_COMMANDS", sorted(t::KNOWN_COMMANDS))?;
    d.set_item("C2S_PAYLOAD", map(t::C2S_PAYLOAD))?;
    d.set_item("S2C_PAYLOAD", map(t::S2C_PAYLOAD))?;
    d.set_item("STRICT_LENGTH", sorted(t::STRICT_LENGTH))?;
    d.set_item("S2C_NO_TRID", sorted(t::S2C_NO_TRID))?;
    d.set_item("S2C_NO_TRID_SYN_BLOCK", sorted(t::S2C_NO_TRID_SYN_BLOCK))?;
    d.set_item("C2S_NO_TRID", sorted(t::C2S_NO_TRID))?;
    d.set_item("S2C_NEEDS_TRID", sorted(t::S2C_NEEDS_TRID))?;
    let mut codes: Vec<u16> = t::ERROR_CODES.to_vec();
    codes.sort();
    d.set_item("ERROR_CODES", codes)?;
    d.set_item("TRID_MAX", t::TRID_MAX)?;
    d.set_item("SYN_BLOCK_VERSION", t::SYN_BLOCK_VERSION)?;
    d.set_item("ERROR_PAYLOAD_VERSION", t::ERROR_PAYLOAD_VERSION)?;
    d.set_item("DEFAULT_MAX_LINE", DEFAULT_MAX_LINE)?;
    d.set_item("DEFAULT_MAX_PAYLOAD", DEFAULT_MAX_PAYLOAD)?;
    Ok(d)
}

/// Both readers of one connection over `reads` (`[(direction, bytes)]`, in wire order), with
/// no Python object per command: `(commands, anomalies, skipped bytes, payload bytes)`.
/// What `bench/codec.py` times as the core's codec.
#[pyfunction]
#[pyo3(signature = (reads, version=None))]
fn decode_reads(py: Python<'_>, reads: &Bound<'_, PyList>, version: Option<&Bound<'_, PyAny>>)
    -> PyResult<(u64, u64, u64, u64)> {
    let types = event_types(py)?;
    let mut state = State { version: version.map(num_from_py).transpose()?, ..State::default() };
    let mut client: Reader<()> = Reader::new(true, DEFAULT_MAX_LINE, DEFAULT_MAX_PAYLOAD);
    let mut server: Reader<()> = Reader::new(false, DEFAULT_MAX_LINE, DEFAULT_MAX_PAYLOAD);
    let c2s = types.c2s.bind(py);
    let mut out: Vec<Event<()>> = Vec::with_capacity(64);
    let (mut commands, mut anomalies, mut skipped, mut payload) = (0u64, 0u64, 0u64, 0u64);
    let mut count = |out: &mut Vec<Event<()>>| {
        for e in out.drain(..) {
            match e {
                Event::Command(c) => {
                    commands += 1;
                    payload += c.payload.map_or(0, |p| p.len() as u64);
                }
                Event::Anomaly { .. } => anomalies += 1,
                Event::Skipped { raw, .. } => skipped += raw.len() as u64,
            }
        }
    };
    for item in reads.iter() {
        let (direction, data): (Bound<'_, PyAny>, Bound<'_, PyBytes>) = item.extract()?;
        let reader = if direction.is(c2s) || direction.eq(c2s)? { &mut client } else { &mut server };
        reader.feed(&mut state, data.as_bytes(), Some(()), &mut out);
        count(&mut out);
    }
    client.close(None, &mut out);
    server.close(None, &mut out);
    count(&mut out);
    Ok((commands, anomalies, skipped, payload))
}

// -- pcapng ---------------------------------------------------------------------------

use crate::pcapng::PcapngBlocks;

/// The packets of a pcapng file (`analyzer/capture/pcapng.py`'s rules), decoded in batches.
/// A frame of a link type the core does not decode comes back as `(ts, None, linktype,
/// frame, 0, 0)` for the Python reader's fallback (scapy), in its place in the file.
#[pyclass(module = "analyzer._core")]
struct PcapngSegments {
    blocks: PcapngBlocks<std::io::BufReader<File>>,
    #[pyo3(get)]
    tcp_segments: u64,
    #[pyo3(get)]
    fragments: u64,
    last_ts: Option<f64>,
}

#[pymethods]
impl PcapngSegments {
    #[new]
    fn new(path: PathBuf) -> PyResult<Self> {
        let file = File::open(path)?;
        Ok(PcapngSegments {
            blocks: PcapngBlocks::new(std::io::BufReader::with_capacity(1 << 20, file)),
            tcp_segments: 0,
            fragments: 0,
            last_ts: None,
        })
    }

    /// `PcapSegments.run` for pcapng: every packet in file order through the lane or to Python;
    /// a frame of a link type the core does not decode goes to `other(ts, linktype, frame)`,
    /// which returns the horizon when it handed a segment to the tracker, else None. Returns
    /// the packets handed over (0 at the end).
    #[allow(clippy::too_many_arguments)]
    fn run(&mut self, py: Python<'_>, lane: &Bound<'_, FastLane>, slow: &Bound<'_, PyAny>, fast: &Bound<'_, PyAny>,
           time: &Bound<'_, PyAny>, other: &Bound<'_, PyAny>, max: usize) -> PyResult<usize> {
        let calls = LaneCalls { slow, fast, time };
        let mut n = 0;
        while n < max {
            let Some(packet) = self.blocks.next_packet() else { break };
            let ts = packet.ts;
            if packet.linktype < 0 || !known_linktype(packet.linktype as u32) {
                n += 1;
                let horizon = other.call1((ts, packet.linktype, PyBytes::new(py, packet.data)))?;
                if !horizon.is_none() {
                    self.last_ts = Some(ts);
                    lane.borrow_mut().set_horizon(&horizon)?;
                }
                continue;
            }
            if lane_frame(py, lane, &calls, packet.linktype as u32, packet.data, ts, &mut self.tcp_segments,
                          &mut self.fragments)? {
                n += 1;
                self.last_ts = Some(ts);
            }
        }
        Ok(n)
    }

    /// The time of the last segment `run` handed over (None before the first).
    #[getter]
    fn last_ts(&self) -> Option<f64> {
        self.last_ts
    }

    fn read<'py>(&mut self, py: Python<'py>, max: usize) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        let mut n = 0;
        while n < max {
            let Some(packet) = self.blocks.next_packet() else { break };
            let ts = packet.ts;
            if packet.linktype < 0 || !known_linktype(packet.linktype as u32) {
                let item = (ts, py.None(), packet.linktype, PyBytes::new(py, packet.data), 0, 0).into_pyobject(py)?;
                out.append(item)?;
                n += 1;
                continue;
            }
            if push_frame(py, &out, packet.linktype as u32, packet.data, ts, &mut self.tcp_segments, &mut self.fragments)? {
                n += 1;
            }
        }
        Ok(out)
    }

    #[getter]
    fn packets(&self) -> u64 {
        self.blocks.packets
    }

    #[getter]
    fn position(&self) -> u64 {
        self.blocks.position
    }

    #[getter]
    fn simple_packets(&self) -> u64 {
        self.blocks.simple_packets
    }

    #[getter]
    fn bad_blocks(&self) -> u64 {
        self.blocks.bad_blocks
    }

    #[getter]
    fn first_bad(&self) -> Option<(u64, String)> {
        self.blocks.first_bad.clone()
    }

    /// `[(name, offset, detail)]` of what stopped reading.
    #[getter]
    fn anomalies(&self) -> Vec<(&'static str, u64, String)> {
        self.blocks.anomalies.clone()
    }
}

// -- JSON Lines -------------------------------------------------------------------------

use pyo3::intern;
use pyo3::types::{PyBool, PyDict, PyFloat};

use crate::jsonl::{push_bytes_text, push_float, push_str};
use crate::redact::{Masker, ParamRule, SecretTable, Word};

/// `Redactor.core_table()` as it crosses: `(key, rules, payload_secrets, unnumbered, mime_headers)`.
type MaskTable = (Vec<u8>, Vec<(String, String, Vec<(usize, Vec<Vec<u8>>, bool)>, usize, bool)>,
                  Vec<(String, String)>, Vec<String>, Vec<String>);

/// One JSON value for an exact `None`, `str`, `float`, `bool` or 64-bit `int`; false for
/// anything else (the Python writer then writes the whole record).
fn push_value(out: &mut String, v: &Bound<'_, PyAny>) -> bool {
    if v.is_none() {
        out.push_str("null");
    } else if let Ok(s) = v.downcast_exact::<PyString>() {
        match s.to_str() {
            Ok(text) => push_str(out, text),
            Err(_) => return false, // a lone surrogate: the Python writer cleans it
        }
    } else if let Ok(f) = v.downcast_exact::<PyFloat>() {
        return push_float(out, f.value());
    } else if let Ok(b) = v.downcast_exact::<PyBool>() {
        out.push_str(if b.is_true() { "true" } else { "false" });
    } else if let Ok(i) = v.downcast_exact::<PyInt>() {
        if let Ok(n) = i.extract::<i64>() {
            out.push_str(n.to_string().as_str());
        } else if let Ok(n) = i.extract::<u64>() {
            out.push_str(n.to_string().as_str());
        } else {
            return false; // past 64 bits: orjson refuses it, the Python writer writes it
        }
    } else {
        return false;
    }
    true
}

/// How deep `push_data` follows lists and dicts (deeper: the Python writer's).
const DATA_DEPTH: usize = 32;

/// One JSON value of plain data, as orjson (and `json`) write it: `push_value`'s values, and
/// exact lists, tuples and dicts with exact `str` keys (in their order), nested up to `depth`;
/// false for anything else.
fn push_data(out: &mut String, v: &Bound<'_, PyAny>, depth: usize) -> bool {
    let items = if let Ok(list) = v.downcast_exact::<PyList>() {
        list.iter()
    } else if let Ok(tuple) = v.downcast_exact::<PyTuple>() {
        tuple.to_list().iter()
    } else if let Ok(dict) = v.downcast_exact::<PyDict>() {
        if depth == 0 {
            return false;
        }
        out.push('{');
        let done = push_items(out, dict, depth - 1);
        out.push('}');
        return done;
    } else {
        return push_value(out, v);
    };
    if depth == 0 {
        return false;
    }
    out.push('[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        if !push_data(out, &item, depth - 1) {
            return false;
        }
    }
    out.push(']');
    true
}

/// The `"key":value` pairs of `dict` (no braces), each as `push_data` writes it.
fn push_items(out: &mut String, dict: &Bound<'_, PyDict>, depth: usize) -> bool {
    for (i, (key, value)) in dict.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let Ok(key) = key.downcast_exact::<PyString>() else { return false };
        let Ok(key) = key.to_str() else { return false };
        push_str(out, key);
        out.push(':');
        if !push_data(out, &value, depth) {
            return false;
        }
    }
    true
}

/// `"name":count` (a comma first past the first, `i`), for a str name and a plain value.
fn push_count(out: &mut String, i: usize, name: &Bound<'_, PyAny>, count: &Bound<'_, PyAny>) -> bool {
    if i > 0 {
        out.push(',');
    }
    let Ok(name) = name.downcast_exact::<PyString>() else { return false };
    if !push_value(out, name) {
        return false;
    }
    out.push(':');
    push_value(out, count)
}

/// Another layer's record (a `link`, `chat`, `session` dict) as `JsonLinesWriter.record` and
/// `encode` write it: `{"stream": stream, **record}` unless it names its own stream.
fn push_record(py: Python<'_>, out: &mut String, stream: &str, record: &Bound<'_, PyDict>) -> PyResult<bool> {
    out.push('{');
    if !record.contains(intern!(py, "stream"))? {
        out.push_str("\"stream\":");
        out.push_str(stream);
        if !record.is_empty() {
            out.push(',');
        }
    }
    if !push_items(out, record, DATA_DEPTH) {
        return Ok(false);
    }
    out.push_str("}\n");
    Ok(true)
}

/// `getattr(obj, name, None)` as Python reads it: None for an AttributeError, other errors raised.
fn getattr_or_none<'py>(py: Python<'py>, obj: &Bound<'py, PyAny>, name: &Bound<'py, PyString>)
                        -> PyResult<Option<Bound<'py, PyAny>>> {
    match obj.getattr(name) {
        Ok(value) => Ok(Some(value)),
        Err(err) if err.is_instance_of::<pyo3::exceptions::PyAttributeError>(py) => Ok(None),
        Err(err) => Err(err),
    }
}

/// `"name":value,` for one attribute of `obj`.
fn push_field(out: &mut String, key: &str, obj: &Bound<'_, PyAny>, attr: &Bound<'_, PyString>) -> PyResult<bool> {
    out.push('"');
    out.push_str(key);
    out.push_str("\":");
    Ok(push_value(out, &obj.getattr(attr)?))
}

/// `"dir":…,"ts":…,"offset":…`, where a command or a skipped run sits in its stream.
fn push_position(py: Python<'_>, out: &mut String, ev: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(push_field(out, "dir", ev, intern!(py, "direction"))?
        && { out.push(','); push_field(out, "ts", ev, intern!(py, "ts"))? }
        && { out.push(','); push_field(out, "offset", ev, intern!(py, "offset"))? })
}

/// The lines of the JSON Lines writer's `command`, `transaction` and `skipped` records,
/// byte for byte as `JsonLinesWriter` writes them, for the events it can: `lines` writes a
/// feed's batch into one buffer and asks the Python writer for the rest; `line` (one event)
/// answers None for any other event, for a command whose parameters or payload the redactor may
/// change and this formatter does not mask (without `masks`: a secret-bearing code or a
/// payload; a code that is not ASCII; a payload one of the free-text rules not done here may
/// apply to: see `redact::SecretTable::redact_payload`), and for values the Python writer handles itself (floats past the plain range, ints past
/// 64 bits, lone surrogates, subclasses). The Python writer stays the rule; tests compare both.
#[pyclass(module = "analyzer._core")]
pub struct JsonFormatter {
    command: PyObject,
    transaction: PyObject,
    skipped: PyObject,
    /// SECRET_COMMANDS (a few short codes): compared in place, without an upper-cased copy.
    secret: Vec<String>,
    redact: bool,
    payloads: bool,
    /// The redactor's table and key (`redact.core_table()`): a secret-bearing command is then
    /// masked here; without them (a redactor of another class) it is left to Python.
    masks: Option<(SecretTable, Masker)>,
}

impl JsonFormatter {
    fn command_line(&self, py: Python<'_>, out: &mut String, ev: &Bound<'_, PyAny>) -> PyResult<bool> {
        let cmd = ev.getattr(intern!(py, "cmd"))?;
        let Ok(cmd) = cmd.downcast_exact::<PyString>() else { return Ok(false) };
        let Ok(code) = cmd.to_str() else { return Ok(false) };
        if self.redact && !code.is_ascii() {
            return Ok(false); // `str.upper` beyond ASCII: the redactor's own
        }
        // A secret-bearing code (`Redactor.params` looks at it): masked here with the
        // redactor's table and key, or left to Python when the formatter has none.
        let secret = if self.redact && self.secret.iter().any(|s| s.eq_ignore_ascii_case(code)) {
            match &self.masks {
                Some(masks) => Some(masks),
                None => return Ok(false),
            }
        } else {
            None
        };
        if !push_position(py, out, ev)? {
            return Ok(false);
        }
        out.push_str(",\"cmd\":");
        push_str(out, code);
        out.push_str(",\"trid\":");
        let trid = ev.getattr(intern!(py, "trid"))?;
        if !push_value(out, &trid) {
            return Ok(false);
        }
        out.push_str(",\"params\":[");
        let args = ev.getattr(intern!(py, "args"))?;
        let Ok(args) = args.downcast_exact::<PyList>() else { return Ok(false) };
        let skip = usize::from(!trid.is_none());
        let mut direction = None;
        if let Some((table, masker)) = secret {
            let dir = ev.getattr(intern!(py, "direction"))?;
            let Ok(dir) = dir.downcast_exact::<PyString>() else { return Ok(false) };
            let Ok(dir) = dir.to_str() else { return Ok(false) };
            let dir = dir.to_owned();
            let mut raw = Vec::with_capacity(args.len());
            for arg in args.iter().skip(skip) {
                let Ok(bytes) = arg.downcast_exact::<PyBytes>() else { return Ok(false) };
                raw.push(bytes.clone());
            }
            let params: Vec<&[u8]> = raw.iter().map(|b| b.as_bytes()).collect();
            let hidden = table.secret_params(code, &dir, skip == 1, &params);
            for (i, param) in params.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if hidden.contains(&i) {
                    push_str(out, &masker.mask(param));
                } else {
                    push_bytes_text(out, param);
                }
            }
            direction = Some(dir);
        } else {
            for (i, arg) in args.iter().enumerate().skip(skip) {
                let Ok(raw) = arg.downcast_exact::<PyBytes>() else { return Ok(false) };
                if i > skip {
                    out.push(',');
                }
                push_bytes_text(out, raw.as_bytes());
            }
        }
        out.push(']');
        out.push(',');
        if !push_field(out, "payload_len", ev, intern!(py, "payload_len"))? {
            return Ok(false);
        }
        if self.payloads {
            let payload = ev.getattr(intern!(py, "payload"))?;
            if !payload.is_none() {
                let Ok(raw) = payload.downcast_exact::<PyBytes>() else { return Ok(false) };
                let raw = raw.as_bytes();
                out.push_str(",\"payload\":");
                if !self.redact {
                    push_bytes_text(out, raw);
                } else {
                    // `Redactor.payload`, for a redactor whose table this formatter has.
                    let Some((table, masker)) = &self.masks else { return Ok(false) };
                    match (secret, &direction) {
                        // A payload of PAYLOAD_SECRETS (a QRY's MD5 answer) masked whole.
                        (Some(_), Some(dir)) if table.payload_is_secret(code, dir) => push_str(out, &masker.mask(raw)),
                        // The MIME header lines and ticket fields masked; another rule: Python's.
                        _ => match table.redact_payload(raw, &|secret| masker.mask(secret)) {
                            Some(text) => push_bytes_text(out, &text),
                            None => return Ok(false),
                        },
                    }
                }
            }
        }
        Ok(true)
    }

    fn transaction_line(&self, py: Python<'_>, out: &mut String, ev: &Bound<'_, PyAny>) -> PyResult<bool> {
        let (ts, offset) = (intern!(py, "ts"), intern!(py, "offset"));
        if !push_field(out, "trid", ev, intern!(py, "trid"))? {
            return Ok(false);
        }
        out.push(',');
        if !push_field(out, "cmd", ev, intern!(py, "cmd"))? {
            return Ok(false);
        }
        out.push_str(",\"request\":{");
        let request = ev.getattr(intern!(py, "request"))?;
        if !push_field(out, "ts", &request, ts)? {
            return Ok(false);
        }
        out.push(',');
        if !push_field(out, "offset", &request, offset)? {
            return Ok(false);
        }
        out.push_str("},\"replies\":[");
        let replies = ev.getattr(intern!(py, "replies"))?;
        let Ok(replies) = replies.downcast_exact::<PyList>() else { return Ok(false) };
        for (i, reply) in replies.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('{');
            if !push_field(out, "cmd", &reply, intern!(py, "cmd"))? {
                return Ok(false);
            }
            out.push(',');
            if !push_field(out, "ts", &reply, ts)? {
                return Ok(false);
            }
            out.push(',');
            if !push_field(out, "offset", &reply, offset)? {
                return Ok(false);
            }
            out.push('}');
        }
        out.push_str("],");
        for (key, attr) in [("outcome", intern!(py, "outcome")), ("error", intern!(py, "error")),
                            ("latency_ms", intern!(py, "latency_ms"))] {
            if key != "outcome" {
                out.push(',');
            }
            if !push_field(out, key, ev, attr)? {
                return Ok(false);
            }
        }
        let more = ev.getattr(intern!(py, "more_replies"))?;
        if more.is_truthy()? {
            out.push_str(",\"more_replies\":");
            if !push_value(out, &more) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn skipped_line(&self, py: Python<'_>, out: &mut String, ev: &Bound<'_, PyAny>) -> PyResult<bool> {
        if !push_position(py, out, ev)? {
            return Ok(false);
        }
        out.push_str(",\"length\":");
        let raw = ev.getattr(intern!(py, "raw"))?;
        let Ok(raw) = raw.downcast_exact::<PyBytes>() else { return Ok(false) };
        out.push_str(raw.as_bytes().len().to_string().as_str());
        Ok(true)
    }
}

impl JsonFormatter {
    /// The record's line (newline included) onto `out`, `stream` being the stream's JSON value;
    /// false when the record is the Python writer's (`out` then holds part of a line: the
    /// caller cuts it off).
    fn push_line(&self, py: Python<'_>, out: &mut String, stream: &str, event: &Bound<'_, PyAny>) -> PyResult<bool> {
        let kind = event.get_type();
        let name = if kind.is(&self.command) {
            "command"
        } else if kind.is(&self.transaction) {
            "transaction"
        } else if kind.is(&self.skipped) {
            "skipped"
        } else if let Ok(record) = event.downcast_exact::<PyDict>() {
            return push_record(py, out, stream, record);
        } else {
            return Ok(false);
        };
        out.push_str("{\"kind\":\"");
        out.push_str(name);
        out.push_str("\",\"stream\":");
        out.push_str(stream);
        out.push(',');
        let done = match name {
            "command" => self.command_line(py, out, event)?,
            "transaction" => self.transaction_line(py, out, event)?,
            _ => self.skipped_line(py, out, event)?,
        };
        if done {
            out.push_str("}\n");
        }
        Ok(done)
    }
}

#[pymethods]
impl JsonFormatter {
    #[new]
    /// `masks`: `(key, rules, payload_secrets, unnumbered, mime_headers)` of the run's redactor
    /// (`Redactor.core_table()`): the key, COMMAND_SECRETS as `(code, direction, [(index,
    /// [word], negate)], first, to_end)`, PAYLOAD_SECRETS as `(code, direction)`, the codes
    /// that never carry a TrID among their parameters and MIME_SECRET_HEADERS (sorted).
    /// Without it (with `redact`) a secret-bearing command and every payload are left to Python.
    #[pyo3(signature = (command, transaction, skipped, secret_commands, redact, payloads, masks=None))]
    fn new(command: PyObject, transaction: PyObject, skipped: PyObject, secret_commands: Vec<String>,
           redact: bool, payloads: bool, masks: Option<MaskTable>) -> Self {
        let masks = masks.map(|(key, rules, payloads, unnumbered, mime_headers)| {
            let rules = rules
                .into_iter()
                .map(|(code, direction, words, first, to_end)| ParamRule {
                    code,
                    direction,
                    words: words.into_iter().map(|(index, words, negate)| Word { index, words, negate }).collect(),
                    first,
                    to_end,
                })
                .collect();
            let mime_headers = mime_headers.into_iter().map(String::into_bytes).collect();
            (SecretTable { rules, payloads, unnumbered, mime_headers }, Masker::new(&key))
        });
        JsonFormatter { command, transaction, skipped, secret: secret_commands.into_iter().collect(), redact, payloads,
                        masks }
    }

    /// The record's line (newline included), or None: the Python writer writes it.
    fn line(&self, py: Python<'_>, stream: &Bound<'_, PyAny>, event: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
        let mut value = String::new();
        if !push_value(&mut value, stream) {
            return Ok(None);
        }
        let mut out = String::with_capacity(256);
        Ok(self.push_line(py, &mut out, &value, event)?.then_some(out))
    }

    /// The `stream` record's line of `conn` (newline included) as UTF-8 `bytes`, byte for byte
    /// what the Python writer writes for `stream_record(conn)` (analyzer/outputs/jsonl.py,
    /// which it reads as that function does: the same attributes and properties, in the same
    /// order); None when the line is the Python writer's (a proxy's legs, a value past what
    /// this formatter writes: a float past the plain range, a lone surrogate, a key that is
    /// not a str).
    fn stream_line<'py>(&self, py: Python<'py>, conn: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let mut out = String::with_capacity(384);
        out.push_str("{\"kind\":\"stream\",");
        let fields = [("stream", intern!(py, "id")), ("client", intern!(py, "client")), ("server", intern!(py, "server")),
                      ("role", intern!(py, "role")), ("version", intern!(py, "version_label")),
                      ("handle", intern!(py, "handle")), ("start", intern!(py, "first_ts")), ("end", intern!(py, "last_ts"))];
        for (key, attr) in fields {
            if !push_field(&mut out, key, conn, attr)? {
                return Ok(None);
            }
            out.push(',');
        }
        let bytes = conn.getattr(intern!(py, "bytes"))?;
        out.push_str("\"bytes\":{\"c2s\":");
        if !push_value(&mut out, &bytes.get_item(intern!(py, "c2s"))?) {
            return Ok(None);
        }
        out.push_str(",\"s2c\":");
        if !push_value(&mut out, &bytes.get_item(intern!(py, "s2c"))?) {
            return Ok(None);
        }
        // conn.command_total (an int; anything else is the Python writer's).
        out.push_str("},\"commands\":");
        if !push_value(&mut out, &conn.getattr(intern!(py, "command_total"))?) {
            return Ok(None);
        }
        // dict(conn.outcome_counts()), dict(conn.anomalies): the pairs in their order.
        out.push_str(",\"transactions\":{");
        let outcomes = conn.call_method0(intern!(py, "outcome_counts"))?;
        for (i, pair) in outcomes.try_iter()?.enumerate() {
            let pair = pair?;
            let Ok(pair) = pair.downcast_exact::<PyTuple>() else { return Ok(None) };
            if pair.len() != 2 {
                return Ok(None);
            }
            if !push_count(&mut out, i, &pair.get_item(0)?, &pair.get_item(1)?) {
                return Ok(None);
            }
        }
        out.push_str("},\"anomalies\":{");
        let anomalies = conn.getattr(intern!(py, "anomalies"))?;
        let Ok(anomalies) = anomalies.downcast::<PyDict>() else { return Ok(None) };
        if !push_items(&mut out, anomalies, 0) {   // depth 0: plain values only
            return Ok(None);
        }
        out.push('}');
        // getattr(conn, "legs", None): a live proxy's legs are the Python writer's.
        if let Some(legs) = getattr_or_none(py, conn, intern!(py, "legs"))? {
            if legs.is_truthy()? {
                return Ok(None);
            }
        }
        // getattr(conn, "given_up", 0), when not zero.
        if let Some(given_up) = getattr_or_none(py, conn, intern!(py, "given_up"))? {
            if given_up.is_truthy()? {
                out.push_str(",\"pending_given_up\":");
                if !push_value(&mut out, &given_up) {
                    return Ok(None);
                }
            }
        }
        out.push_str("}\n");
        Ok(Some(PyBytes::new(py, out.as_bytes())))
    }

    /// The lines of all `events` (any iterable) of one stream, in their order, as one UTF-8
    /// `bytes`: each line this formatter writes (`line`), and in the place of each record it
    /// leaves to the Python writer what `declined(context, event)` returns (that line as UTF-8
    /// `bytes`, or None: the event has no line).
    fn lines<'py>(&self, py: Python<'py>, stream: &Bound<'py, PyAny>, events: &Bound<'py, PyAny>,
                  declined: &Bound<'py, PyAny>, context: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        let mut value = String::new();
        let stream_ok = push_value(&mut value, stream); // else every record is Python's
        let mut out = String::with_capacity(256 * events.len().unwrap_or(1).max(1));
        let mut one = |event: Bound<'py, PyAny>| -> PyResult<()> {
            let start = out.len();
            if stream_ok && self.push_line(py, &mut out, &value, &event)? {
                return Ok(());
            }
            out.truncate(start); // `start` ends a line: a char boundary
            let line = declined.call1((context, &event))?;
            if !line.is_none() {
                let line = line.downcast_exact::<PyBytes>()?;
                let text = std::str::from_utf8(line.as_bytes())
                    .map_err(|err| PyValueError::new_err(format!("a declined line is not UTF-8: {err}")))?;
                out.push_str(text);
            }
            Ok(())
        };
        if let Ok(list) = events.downcast_exact::<PyList>() {
            for event in list.iter() {
                one(event)?;
            }
        } else {
            for event in events.try_iter()? {
                one(event?)?;
            }
        }
        Ok(PyBytes::new(py, out.as_bytes()))
    }
}

// -- the TCP fast lane ------------------------------------------------------------------

use pyo3::types::PyByteArray;

use std::collections::VecDeque;

use crate::lane::{lane_flags, Horizon, LaneHalf, LaneKeys, LaneState, Laned, QuietQueue, ACK};

/// One flow in the lane: the tracker's `Flow` (handed back to Python with each segment), each
/// direction's sequence state and the flow's last segment time (`state`) and the reader of
/// each direction (by half index). Its keys are the map's alone (tcp.py passes them again to
/// `take`): thousands of flows are in the lane at once on a busy server's capture, and a second
/// copy cost each 100 bytes.
struct LaneFlow {
    flow: PyObject,
    state: LaneState,
    readers: [Py<PyCommandReader>; 2],
}

impl Laned for LaneFlow {
    fn state(&mut self) -> &mut LaneState {
        &mut self.state
    }
}

/// The flows tcp.py handed to the lane (see core/src/lane.rs for what the lane does).
///
/// `add` takes a flow in the fast state and its sequence state; `take` gives the state back
/// and drops the flow: tcp.py does so before anything but the common case touches the flow
/// (a segment the lane did not take, its close, its connection failing). `horizon` is set from
/// the values `slow` and `fast` return. The lane applies the quiet release itself (see
/// core/src/lane.rs): the tracker's deadlines are its pairing timeouts and idle closes.
#[pyclass(module = "analyzer._core")]
pub struct FastLane {
    keys: LaneKeys,
    flows: Vec<Option<LaneFlow>>,
    free: Vec<usize>,
    horizon: Horizon,
    unacked: usize,
    quiet: QuietQueue,
    stamps: u32,
    /// Flows whose bytes a segment found quiet (`LaneState::arrive`).
    released_at_segment: u64,
}

/// What the lane made of a segment.
enum Verdict {
    /// Taken: what `fast` is called with.
    Taken { flow: PyObject, index: usize, events: PyObject },
    /// A bare ACK of a flow in the lane, applied by the lane (tcp.py `segment` does no more
    /// with it: the quiet release, `last_ts`, the peer's unacknowledged bytes): nothing to call.
    Absorbed,
    /// It continues a flow in the lane, but its time crosses the horizon: Python first.
    Later,
    /// Python's (`slow`).
    Python,
}

impl FastLane {
    fn take_segment(&mut self, py: Python<'_>, ts: f64, ts_obj: &Bound<'_, PyFloat>, s: &crate::decode::Segment<'_>)
        -> Verdict {
        if self.keys.is_empty() || !lane_flags(s.flags, s.payload.len()) {
            return Verdict::Python;
        }
        let mut key = [0u8; 40];
        let klen = s.addrs.len() + s.ports.len();
        if klen > key.len() {
            return Verdict::Python;
        }
        key[..s.addrs.len()].copy_from_slice(s.addrs);
        key[s.addrs.len()..klen].copy_from_slice(s.ports);
        let Some((slot, index)) = self.keys.get(&key[..klen]) else { return Verdict::Python };
        let Some(Some(flow)) = self.flows.get_mut(slot) else { return Verdict::Python };
        let half = &flow.state.halves[index];
        if half.nxt != s.seq || !half.started {
            return Verdict::Python;
        }
        if !self.horizon.admits(ts) {
            return Verdict::Later;
        }
        self.horizon.passed(ts);
        // tcp.py `segment`: the clock moves on, the quiet release, `last_ts`, then the common case.
        if flow.state.arrive(self.horizon.now, ts, self.quiet.quiet) {
            self.released_at_segment += 1;
        }
        let other = &mut flow.state.halves[1 - index];
        if s.flags & ACK != 0 && other.sent.is_some() {
            other.ack_sent(s.ack);
        }
        if s.payload.is_empty() {
            // A bare ACK (`lane_flags`): tcp.py's `segment` then finds nothing pending, no FIN, no
            // RST, and the flow's deadline already no later than its pairing's next expiry.
            self.quiet.note(slot, &mut flow.state);
            self.sweep();
            return Verdict::Absorbed;
        }
        flow.state.halves[index].advance(s.payload, self.unacked);
        self.quiet.note(slot, &mut flow.state);
        // The reader's own failure (it only fails where Python would: an event object it could
        // not make) goes to Python as the exception, which fails the connection as `feed` does.
        let events = match flow.readers[index].borrow_mut(py).feed_bytes(py, s.payload, Some(ts_obj.clone().into_any().unbind())) {
            Ok(list) => list.into_any().unbind(),
            Err(err) => err.into_value(py).into_any(),
        };
        let flow = flow.flow.clone_ref(py);
        self.sweep();
        Verdict::Taken { flow, index, events }
    }

    /// The quiet queue, when the lane's clock passed its head (memory only: see lane.rs; the
    /// head is a peek, read anew each time, as any segment may have queued an earlier one).
    fn sweep(&mut self) {
        if self.quiet.next() < self.horizon.now {
            self.quiet.sweep(self.horizon.now, &mut self.flows);
        }
    }

    fn set_horizon(&mut self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let (now, head, stones, window): (f64, f64, Option<f64>, Option<f64>) = value.extract()?;
        self.horizon.now = now;
        self.horizon.head = head;
        self.horizon.stones = stones;
        self.horizon.window = window;
        self.sweep();
        Ok(())
    }
}

/// One frame of either file format for `run`: a TCP segment goes through the lane (true), an IP
/// fragment is counted, anything else skipped.
#[allow(clippy::too_many_arguments)]
fn lane_frame(py: Python<'_>, lane: &Bound<'_, FastLane>, calls: &LaneCalls<'_, '_>, linktype: u32, data: &[u8],
              ts: f64, tcp_segments: &mut u64, fragments: &mut u64) -> PyResult<bool> {
    match decode_frame(linktype, data) {
        Decoded::Tcp(s) => {
            *tcp_segments += 1;
            lane_segment(py, lane, calls, ts, &s)?;
            Ok(true)
        }
        Decoded::Fragment => {
            *fragments += 1;
            Ok(false)
        }
        Decoded::Other => Ok(false),
    }
}

/// One segment through the lane, or to Python's `segment` (see `PcapSegments.run`). The lane is
/// borrowed only while it works: the Python calls may `take` flows from it.
fn lane_segment(py: Python<'_>, lane: &Bound<'_, FastLane>, calls: &LaneCalls<'_, '_>, ts: f64,
                s: &crate::decode::Segment<'_>) -> PyResult<()> {
    let ts_obj = PyFloat::new(py, ts);
    let mut verdict = lane.borrow_mut().take_segment(py, ts, &ts_obj, s);
    if let Verdict::Later = verdict {
        // `time` brings the tracker to `ts` (its deadlines, tombstones, start windows): the
        // segment then passes the horizon, unless its flow left the lane meanwhile.
        let horizon = calls.time.call1((ts,))?;
        let mut lane = lane.borrow_mut();
        lane.set_horizon(&horizon)?;
        verdict = lane.take_segment(py, ts, &ts_obj, s);
    }
    match verdict {
        Verdict::Absorbed => {}
        Verdict::Taken { flow, index, events } => {
            let head: Option<f64> = calls.fast.call1((flow, index, events, ts_obj, s.payload.len()))?.extract()?;
            if let Some(head) = head {
                lane.borrow_mut().horizon.head = head;
            }
        }
        _ => {
            let horizon = calls.slow.call1(segment_tuple(py, ts, s)?)?;
            lane.borrow_mut().set_horizon(&horizon)?;
        }
    }
    Ok(())
}

/// The tracker's three calls (tcp.py `_slow`, `_fast`, `_time`).
struct LaneCalls<'a, 'py> {
    slow: &'a Bound<'py, PyAny>,
    fast: &'a Bound<'py, PyAny>,
    time: &'a Bound<'py, PyAny>,
}

/// A half's `(nxt, pos, sent)` as tcp.py holds them (`nxt` None: not started).
type HalfState = (Option<u32>, u64, Option<PyObject>);

#[pymethods]
impl FastLane {
    /// `quiet`: the quiet release's interval (tcp.py: the reorder timeout or UNACKED_QUIET,
    /// the shorter).
    #[new]
    #[pyo3(signature = (*, unacked, quiet, tombstone_seconds, start_window))]
    fn new(unacked: usize, quiet: f64, tombstone_seconds: f64, start_window: f64) -> Self {
        FastLane {
            keys: LaneKeys::default(),
            flows: Vec::new(),
            free: Vec::new(),
            horizon: Horizon::new(tombstone_seconds, start_window),
            unacked: unacked.max(1),
            quiet: QuietQueue::new(quiet),
            stamps: 0,
            released_at_segment: 0,
        }
    }

    /// Take `flow` (keys `key0` for half 0, `key1` for half 1, last segment at `last`) into the
    /// lane with each half's `nxt`, `pos` and unacknowledged bytes, and the reader of each
    /// half. Returns its slot.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (flow, key0, key1, last, nxt0, pos0, sent0, nxt1, pos1, sent1, reader0, reader1))]
    fn add(&mut self, flow: PyObject, key0: &[u8], key1: &[u8], last: f64, nxt0: Option<u32>, pos0: u64,
           sent0: Option<Bound<'_, PyByteArray>>, nxt1: Option<u32>, pos1: u64, sent1: Option<Bound<'_, PyByteArray>>,
           reader0: Py<PyCommandReader>,
           reader1: Py<PyCommandReader>) -> usize {
        self.stamps = self.stamps.wrapping_add(1);
        let halves = [LaneHalf::new(nxt0, pos0, sent0.map(|b| b.to_vec()).unwrap_or_default()),
                      LaneHalf::new(nxt1, pos1, sent1.map(|b| b.to_vec()).unwrap_or_default())];
        let entry = LaneFlow { flow, state: LaneState::new(halves, last, self.stamps), readers: [reader0, reader1] };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.flows[slot] = Some(entry);
                slot
            }
            None => {
                self.flows.push(Some(entry));
                self.flows.len() - 1
            }
        };
        if let Some(Some(flow)) = self.flows.get_mut(slot) {
            self.quiet.note(slot, &mut flow.state);
        }
        // Half 1's key last, as tcp.py's `_new_flow` writes them (a flow from a host to itself
        // on one port has one key for both halves).
        self.keys.insert(key0, slot, 0);
        self.keys.insert(key1, slot, 1);
        slot
    }

    /// The lane's clock: the latest segment time it or the tracker has seen (it takes bare
    /// ACKs without calling Python, so the tracker reads it before it acts).
    #[getter]
    fn now(&self) -> f64 {
        self.horizon.now
    }

    /// The time of the last segment of the flow in `slot` (its bare ACKs included).
    fn last(&self, slot: usize) -> PyResult<f64> {
        match self.flows.get(slot) {
            Some(Some(entry)) => Ok(entry.state.last),
            _ => Err(PyValueError::new_err(format!("no flow in lane slot {slot}"))),
        }
    }

    /// Drop the flow in `slot` (the keys it was added with: `key0`, `key1`) from the lane and
    /// give back each half's `(nxt, pos, sent)` (`sent` a bytearray, or None when nothing is
    /// unacknowledged) and the time of its last segment.
    fn take(&mut self, py: Python<'_>, slot: usize, key0: &[u8], key1: &[u8]) -> PyResult<(HalfState, HalfState, f64)> {
        let Some(entry) = self.flows.get_mut(slot).and_then(Option::take) else {
            return Err(PyValueError::new_err(format!("no flow in lane slot {slot}")));
        };
        self.free.push(slot);
        for key in [key0, key1] {
            self.keys.remove_if(key, slot);
        }
        let out = |h: &LaneHalf| -> HalfState {
            let sent = h.sent.as_ref().map(|_| PyByteArray::new(py, &h.sent_bytes()).into_any().unbind());
            (h.started.then_some(h.nxt), h.pos, sent)
        };
        Ok((out(&entry.state.halves[0]), out(&entry.state.halves[1]), entry.state.last))
    }

    /// How many flows the quiet release emptied: at their next segment, and by the quiet queue
    /// (flows that stayed silent), and the entries the queue holds now (bench/counts.py).
    #[getter]
    fn released(&self) -> (u64, u64, usize) {
        (self.released_at_segment, self.quiet.released, self.quiet.len())
    }

    /// Flows in the lane.
    fn __len__(&self) -> usize {
        self.flows.len() - self.free.len()
    }

    /// The tracker's horizon `(now, head, oldest tombstone or None, start window or None)`.
    #[setter]
    fn set_state(&mut self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.set_horizon(value)
    }

    #[getter]
    fn state(&self) -> (f64, f64, Option<f64>, Option<f64>) {
        let h = &self.horizon;
        (h.now, h.head, h.stones, h.window)
    }
}
