//! pier-monitor: one per container. Filled in by the monitor issue (#3).

fn main() -> std::process::ExitCode {
    eprintln!("pier-monitor: not built yet (see issue 3)");
    std::process::ExitCode::from(2)
}
