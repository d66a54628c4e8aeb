//! `kiln-jailer [OPTIONS] -- PROGRAM [ARGS...]`: see the library's docs and
//! docs/JAIL.md. Exit status: the program's own; 2 for a bad command line; 125 when the
//! jail could not be built.

fn main() {
    let spec = match kiln_jailer::Spec::parse(std::env::args_os().skip(1)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kiln-jailer: {e}");
            std::process::exit(2);
        }
    };
    let e = kiln_jailer::run(&spec);
    eprintln!("kiln-jailer: {}: {e}", spec.id);
    std::process::exit(kiln_jailer::SETUP_FAILED);
}
