//! One method per endpoint.

use std::io::{BufRead, BufReader, Read, Write};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use kiln::snapshot::SnapshotMeta;
use kiln::store::Event;
use kiln::{DirEntry, FileStat};

use super::http::{encode, ReqBody};
use super::{Client, ClientError};
use crate::api::{
    CreateSandbox, ExecLine, ExecRequest, ExecResult, ExitInfo, ForkRequest, Health,
    OutputEncoding, Removed, RestoreRequest, SandboxView, SnapshotRequest, StopResult,
};

/// Longest NDJSON line accepted from an exec stream.
const MAX_LINE: u64 = 16 << 20;

/// Output of a streamed exec, handed to the caller's callback as it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output<'a> {
    Stdout(&'a [u8]),
    Stderr(&'a [u8]),
}

/// `GET /v1/sandboxes` filters (all must match).
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub state: Option<kiln::State>,
    pub backend: Option<String>,
    pub metadata: Vec<(String, String)>,
}

impl ListFilter {
    fn query(&self) -> String {
        let mut q: Vec<String> = Vec::new();
        if let Some(s) = self.state {
            q.push(format!("state={s}"));
        }
        if let Some(b) = &self.backend {
            q.push(format!("backend={}", encode(b)));
        }
        for (k, v) in &self.metadata {
            q.push(format!("metadata.{}={}", encode(k), encode(v)));
        }
        if q.is_empty() {
            String::new()
        } else {
            format!("?{}", q.join("&"))
        }
    }
}

fn sb(id: &str) -> String {
    format!("/v1/sandboxes/{}", encode(id))
}

fn files(id: &str, sub: &str, path: &str) -> String {
    format!("{}/files{sub}?path={}", sb(id), encode(path))
}

const NONE: Option<&()> = None;

impl Client {
    pub fn health(&self) -> Result<Health, ClientError> {
        self.json("GET", "/v1/health", NONE)
    }

    pub fn create(&self, req: &CreateSandbox) -> Result<SandboxView, ClientError> {
        self.json("POST", "/v1/sandboxes", Some(req))
    }

    pub fn get(&self, id: &str) -> Result<SandboxView, ClientError> {
        self.json("GET", &sb(id), NONE)
    }

    pub fn list(&self, filter: &ListFilter) -> Result<Vec<SandboxView>, ClientError> {
        self.json("GET", &format!("/v1/sandboxes{}", filter.query()), NONE)
    }

    /// Stops (if it runs) and removes a sandbox.
    pub fn remove(&self, id: &str) -> Result<Removed, ClientError> {
        self.json("DELETE", &sb(id), NONE)
    }

    /// Runs a command, handing output to `on_output` as it arrives; returns how it
    /// ended.
    pub fn exec(
        &self,
        id: &str,
        req: &ExecRequest,
        mut on_output: impl FnMut(Output<'_>),
    ) -> Result<ExitInfo, ClientError> {
        let body = serde_json::to_vec(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let target = format!("{}/exec", sb(id));
        let r = self.call("POST", &target, Some(("application/json", &body)))?;
        let mut lines = BufReader::new(r.body);
        let mut line = Vec::new();
        loop {
            line.clear();
            (&mut lines).take(MAX_LINE).read_until(b'\n', &mut line)?;
            if line.is_empty() {
                return Err(ClientError::Protocol(
                    "the exec stream ended without an exit line".into(),
                ));
            }
            let parsed: ExecLine = serde_json::from_slice(&line)
                .map_err(|e| ClientError::Protocol(format!("bad exec line: {e}")))?;
            let data = |d: &str| {
                B64.decode(d)
                    .map_err(|e| ClientError::Protocol(format!("bad base64 in exec output: {e}")))
            };
            match parsed {
                ExecLine::Stdout { data: d } => on_output(Output::Stdout(&data(&d)?)),
                ExecLine::Stderr { data: d } => on_output(Output::Stderr(&data(&d)?)),
                ExecLine::Exit {
                    code,
                    signal,
                    timed_out,
                    duration_ms,
                } => {
                    return Ok(ExitInfo {
                        code,
                        signal,
                        timed_out,
                        duration_ms,
                    })
                }
                ExecLine::Error { error } => {
                    return Err(ClientError::Stream {
                        code: error.code,
                        message: error.message,
                    })
                }
            }
        }
    }

    /// Runs a command to its end and returns everything at once (`?stream=false`).
    pub fn exec_collect(
        &self,
        id: &str,
        req: &ExecRequest,
        encoding: OutputEncoding,
    ) -> Result<ExecResult, ClientError> {
        let enc = match encoding {
            OutputEncoding::Text => "text",
            OutputEncoding::Base64 => "base64",
        };
        let target = format!("{}/exec?stream=false&encoding={enc}", sb(id));
        self.json("POST", &target, Some(req))
    }

    /// Writes a file in the guest (`mode`: permission bits, e.g. 0o644).
    pub fn write_file(
        &self,
        id: &str,
        path: &str,
        data: &[u8],
        mode: Option<u32>,
    ) -> Result<(), ClientError> {
        self.write_file_from(id, path, &mut &data[..], data.len() as u64, mode)
    }

    /// Streams `len` bytes of `input` into a guest file (an upload of any size).
    pub fn write_file_from(
        &self,
        id: &str,
        path: &str,
        input: &mut dyn Read,
        len: u64,
        mode: Option<u32>,
    ) -> Result<(), ClientError> {
        let mut target = files(id, "", path);
        if let Some(m) = mode {
            target.push_str(&format!("&mode={m:o}"));
        }
        let body = ReqBody::Reader("application/octet-stream", input, len);
        self.call_body("PUT", &target, body)?.bytes()?;
        Ok(())
    }

    pub fn read_file(&self, id: &str, path: &str) -> Result<Vec<u8>, ClientError> {
        let mut out = Vec::new();
        self.read_file_to(id, path, &mut out)?;
        Ok(out)
    }

    /// Streams a guest file into `out`; its size. A transfer the server broke off is an
    /// error, never a short file.
    pub fn read_file_to(
        &self,
        id: &str,
        path: &str,
        out: &mut dyn Write,
    ) -> Result<u64, ClientError> {
        let mut r = self.call("GET", &files(id, "", path), None)?;
        Ok(std::io::copy(&mut r.body, out)?)
    }

    pub fn stat(&self, id: &str, path: &str) -> Result<FileStat, ClientError> {
        self.json("GET", &files(id, "/stat", path), NONE)
    }

    pub fn list_dir(&self, id: &str, path: &str) -> Result<Vec<DirEntry>, ClientError> {
        self.json("GET", &files(id, "/list", path), NONE)
    }

    pub fn remove_path(&self, id: &str, path: &str, recursive: bool) -> Result<(), ClientError> {
        let target = format!("{}&recursive={recursive}", files(id, "", path));
        self.empty("DELETE", &target)
    }

    /// Creates a directory and its parents.
    pub fn mkdir(&self, id: &str, path: &str) -> Result<(), ClientError> {
        self.empty("POST", &files(id, "/mkdir", path))
    }

    pub fn pause(&self, id: &str) -> Result<SandboxView, ClientError> {
        self.json("POST", &format!("{}/pause", sb(id)), NONE)
    }

    pub fn resume(&self, id: &str) -> Result<SandboxView, ClientError> {
        self.json("POST", &format!("{}/resume", sb(id)), NONE)
    }

    pub fn stop(&self, id: &str) -> Result<StopResult, ClientError> {
        self.json("POST", &format!("{}/stop", sb(id)), NONE)
    }

    pub fn snapshot(&self, id: &str, name: Option<&str>) -> Result<SnapshotMeta, ClientError> {
        let req = SnapshotRequest {
            name: name.map(str::to_string),
        };
        self.json("POST", &format!("{}/snapshot", sb(id)), Some(&req))
    }

    pub fn fork(&self, id: &str, count: usize) -> Result<Vec<SandboxView>, ClientError> {
        self.json(
            "POST",
            &format!("{}/fork", sb(id)),
            Some(&ForkRequest { count }),
        )
    }

    pub fn snapshots(&self) -> Result<Vec<crate::api::SnapshotView>, ClientError> {
        self.json("GET", "/v1/snapshots", NONE)
    }

    pub fn remove_snapshot(&self, name: &str) -> Result<(), ClientError> {
        self.empty("DELETE", &format!("/v1/snapshots/{}", encode(name)))
    }

    pub fn restore(&self, name: &str, req: &RestoreRequest) -> Result<SandboxView, ClientError> {
        self.json(
            "POST",
            &format!("/v1/snapshots/{}/restore", encode(name)),
            Some(req),
        )
    }

    /// The guest console (or with `vmm`, the VMM's log) so far.
    pub fn logs(&self, id: &str, vmm: bool) -> Result<Vec<u8>, ClientError> {
        let kind = if vmm { "vmm" } else { "console" };
        Ok(self
            .call("GET", &format!("{}/logs?kind={kind}", sb(id)), None)?
            .bytes()?)
    }

    /// Follows a log: `on_chunk` gets what is appended until the sandbox stops or it
    /// returns false.
    pub fn follow_logs(
        &self,
        id: &str,
        vmm: bool,
        mut on_chunk: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), ClientError> {
        let kind = if vmm { "vmm" } else { "console" };
        let target = format!("{}/logs?kind={kind}&follow=true", sb(id));
        let mut body = self.call("GET", &target, None)?.body;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = body.read(&mut buf)?;
            if n == 0 || !on_chunk(&buf[..n]) {
                return Ok(());
            }
        }
    }

    /// Events after `since` (0: from the start), oldest first.
    pub fn events(&self, since: i64, limit: u32) -> Result<Vec<Event>, ClientError> {
        self.json(
            "GET",
            &format!("/v1/events?since={since}&limit={limit}"),
            NONE,
        )
    }

    /// The last `limit` events of one sandbox.
    pub fn sandbox_events(&self, id: &str, limit: u32) -> Result<Vec<Event>, ClientError> {
        self.json("GET", &format!("{}/events?limit={limit}", sb(id)), NONE)
    }

    /// Fills a snapshot's warm pool to `size` (and keeps it there).
    pub fn pool(&self, name: &str, size: usize) -> Result<crate::api::SnapshotView, ClientError> {
        let target = format!("/v1/snapshots/{}/pool", encode(name));
        self.json("POST", &target, Some(&crate::api::PoolRequest { size }))
    }

    /// The images sandboxes have booted, by name.
    pub fn images(&self) -> Result<Vec<kiln::store::ImageRow>, ClientError> {
        self.json("GET", "/v1/images", NONE)
    }

    /// The Prometheus exposition.
    pub fn metrics(&self) -> Result<String, ClientError> {
        let b = self.call("GET", "/metrics", None)?.bytes()?;
        String::from_utf8(b).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    pub fn openapi(&self) -> Result<serde_json::Value, ClientError> {
        self.json("GET", "/openapi.json", NONE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_paths_are_encoded() {
        let f = ListFilter {
            state: Some(kiln::State::Running),
            backend: None,
            metadata: vec![("team".into(), "a b".into())],
        };
        assert_eq!(f.query(), "?state=running&metadata.team=a%20b");
        assert_eq!(ListFilter::default().query(), "");
        assert_eq!(
            files("sb-1", "/stat", "/tmp/x y"),
            "/v1/sandboxes/sb-1/files/stat?path=/tmp/x%20y"
        );
    }
}
