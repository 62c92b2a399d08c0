//! Renderers for the combined report. To be written.
