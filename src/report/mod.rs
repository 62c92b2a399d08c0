//! Renderers for the combined report: terminal, JSON, HTML. To be written (issue 5).
