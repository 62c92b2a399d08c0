//! Address-set diff of two or three CRuby dumps (heapy semantics). To be written (issue 2).
