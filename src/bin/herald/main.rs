//! The herald command line (its subcommands arrive with the router).

fn main() {}
