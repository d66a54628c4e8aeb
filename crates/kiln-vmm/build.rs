//! Compiles `seccomp/x86_64.json` (seccompiler's JSON rules, one filter per thread
//! kind) into BPF at build time and writes it as a Rust table for `src/seccomp`.

use std::fmt::Write as _;

fn main() {
    let rules = "seccomp/x86_64.json";
    println!("cargo:rerun-if-changed={rules}");
    let file = std::fs::File::open(rules).expect("open seccomp/x86_64.json");
    let filters = seccompiler::compile_from_json(file, seccompiler::TargetArch::x86_64)
        .unwrap_or_else(|e| panic!("{rules}: {e}"));
    let mut kinds: Vec<_> = filters.into_iter().collect();
    kinds.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::from("pub(super) static FILTERS: &[(&str, &[Insn])] = &[\n");
    for (kind, prog) in kinds {
        write!(out, "    ({kind:?}, &[").unwrap();
        for i in prog {
            write!(out, "({}, {}, {}, {}),", i.code, i.jt, i.jf, i.k).unwrap();
        }
        out.push_str("]),\n");
    }
    out.push_str("];\n");
    let dest = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("seccomp_filters.rs");
    std::fs::write(dest, out).expect("write seccomp_filters.rs");
}
