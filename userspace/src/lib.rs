pub mod probes;
