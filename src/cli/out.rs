//! Writing command output to stdout the way a Unix filter does.

/// Writes to stdout; a closed pipe (`vole call ... | head`) ends the
/// program quietly, as for any Unix filter.
pub fn out(text: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(text).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("cannot write to stdout: {e}");
        std::process::exit(i32::from(super::exit::INTERNAL));
    }
}

/// `println!` through [`out`].
macro_rules! outln {
    () => { $crate::cli::out::out(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::cli::out::out(format_args!("{}\n", format_args!($($arg)*))) };
}
pub(crate) use outln;
