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
    reader: Reader<u64>,
    #[pyo3(get)]
    direction: PyObject,
    #[pyo3(get)]
    state: Py<PyProtocolState>,
    generation: u64,
    partial_ts: Option<(u64, PyObject)>,
    out: Vec<Event<u64>>,
}

impl PyCommandReader {
    fn begin(&mut self, ts: &Option<PyObject>) -> Option<u64> {
        self.generation += 1;
        ts.as_ref().map(|_| self.generation)
    }

    fn finish<'py>(&mut self, py: Python<'py>, ts: Option<PyObject>) -> PyResult<Bound<'py, PyList>> {
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
        let direction = self.direction.bind(py);
        // Taken, not drained: a drained Vec keeps its capacity (an Event is about 190 bytes),
        // and every idle reader of a busy capture would hold the largest batch it ever made.
        for event in std::mem::take(&mut self.out) {
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
            direction: if client { types.c2s.clone_ref(py) } else { types.s2c.clone_ref(py) },
            state,
            generation: 0,
            partial_ts: None,
            out: Vec::new(),
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
        let tag = self.begin(&ts);
        let state = self.state.clone_ref(py);
        let mut state = state.borrow_mut(py);
        self.reader.feed(&mut state.inner, bytes, tag, &mut self.out);
        drop(state);
        self.finish(py, ts)
    }

    #[pyo3(signature = (ts=None))]
    fn close<'py>(&mut self, py: Python<'py>, ts: Option<PyObject>) -> PyResult<Bound<'py, PyList>> {
        let tag = self.begin(&ts);
        self.reader.close(tag, &mut self.out);
        self.finish(py, ts)
    }

    #[pyo3(signature = (size, ts=None))]
    fn gap<'py>(&mut self, py: Python<'py>, size: u64, ts: Option<PyObject>) -> PyResult<Bound<'py, PyList>> {
        let tag = self.begin(&ts);
        self.reader.gap(size, tag, &mut self.out);
        self.finish(py, ts)
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
        })
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
use pyo3::types::{PyBool, PyFloat};

use crate::jsonl::{payload_needs_redaction, push_bytes_text, push_float, push_str};

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
/// byte for byte as `JsonLinesWriter` writes them, for the events it can: `line` answers
/// None for any other event, for a command whose parameters or payload the redactor may
/// change (secret-bearing codes, payloads its gates pick: see `jsonl::payload_needs_redaction`),
/// and for values the Python writer handles itself (floats past the plain range, ints past
/// 64 bits, lone surrogates, subclasses). The Python writer stays the rule; tests compare both.
#[pyclass(module = "analyzer._core")]
pub struct JsonFormatter {
    command: PyObject,
    transaction: PyObject,
    skipped: PyObject,
    secret: std::collections::HashSet<String>,
    redact: bool,
    payloads: bool,
}

impl JsonFormatter {
    fn command_line(&self, py: Python<'_>, out: &mut String, ev: &Bound<'_, PyAny>) -> PyResult<bool> {
        let cmd = ev.getattr(intern!(py, "cmd"))?;
        let Ok(cmd) = cmd.downcast_exact::<PyString>() else { return Ok(false) };
        let Ok(code) = cmd.to_str() else { return Ok(false) };
        if self.redact && (!code.is_ascii() || self.secret.contains(&code.to_ascii_uppercase())) {
            return Ok(false);
        }
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
        for (i, arg) in args.iter().enumerate().skip(skip) {
            let Ok(raw) = arg.downcast_exact::<PyBytes>() else { return Ok(false) };
            if i > skip {
                out.push(',');
            }
            push_bytes_text(out, raw.as_bytes());
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
                if self.redact && payload_needs_redaction(raw) {
                    return Ok(false);
                }
                out.push_str(",\"payload\":");
                push_bytes_text(out, raw);
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

#[pymethods]
impl JsonFormatter {
    #[new]
    #[pyo3(signature = (command, transaction, skipped, secret_commands, redact, payloads))]
    fn new(command: PyObject, transaction: PyObject, skipped: PyObject, secret_commands: Vec<String>,
           redact: bool, payloads: bool) -> Self {
        JsonFormatter { command, transaction, skipped, secret: secret_commands.into_iter().collect(), redact, payloads }
    }

    /// The record's line (newline included), or None: the Python writer writes it.
    fn line(&self, py: Python<'_>, stream: &Bound<'_, PyAny>, event: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
        let kind = event.get_type();
        let name = if kind.is(&self.command) {
            "command"
        } else if kind.is(&self.transaction) {
            "transaction"
        } else if kind.is(&self.skipped) {
            "skipped"
        } else {
            return Ok(None);
        };
        let mut out = String::with_capacity(256);
        out.push_str("{\"kind\":\"");
        out.push_str(name);
        out.push_str("\",\"stream\":");
        if !push_value(&mut out, stream) {
            return Ok(None);
        }
        out.push(',');
        let done = match name {
            "command" => self.command_line(py, &mut out, event)?,
            "transaction" => self.transaction_line(py, &mut out, event)?,
            _ => self.skipped_line(py, &mut out, event)?,
        };
        if !done {
            return Ok(None);
        }
        out.push_str("}\n");
        Ok(Some(out))
    }
}
