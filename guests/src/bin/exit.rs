//! `exit`: ends the run with status 7 through `SYSTEM_OFF` (`x1` = 7), so the run's exit status must be 7.

#![no_std]
#![no_main]

use guests::{println, psci, Platform};

guests::entry!(main);

fn main(_: &Platform) {
    println!("guest: exit: status 7");
    psci::system_off(7)
}
