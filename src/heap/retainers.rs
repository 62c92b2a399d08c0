//! Retainer paths from ROOTs to objects, for `leakhunt retainers`. To be written (issue 2).
