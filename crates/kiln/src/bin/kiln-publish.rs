//! `kiln-publish`: the detached process that serves a sandbox's published ports
//! (`kiln::ports`; started by `kiln create -p`, not by hand).

fn main() {
    match kiln::ports::PublisherArgs::parse(std::env::args().skip(1)) {
        Ok(a) => std::process::exit(kiln::ports::run_publisher(a)),
        Err(e) => {
            println!("ERR other kiln-publish: {e}");
            eprintln!("kiln-publish: {e}");
            std::process::exit(2);
        }
    }
}
