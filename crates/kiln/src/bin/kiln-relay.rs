//! `kiln-relay`: the QEMU backend's agent relay (see `kiln::backend::qemu::relay_proc`).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(kiln::backend::qemu::relay_proc::main(&args));
}
