//! Transport: NNG push sinks, file and spill sinks, and the `pull` consumer.
