//! The correlator: lines up native leak sites with Ruby class growth, FFI bindings and wrapper
//! lifecycles, and produces ranked findings. To be written (issue 5).
