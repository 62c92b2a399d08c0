#![no_main]
leakhunt_fuzz::fuzz_target_for!(leakhunt_fuzz::targets::zst);
