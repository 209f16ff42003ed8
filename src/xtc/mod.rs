//! XTC2: datagrams, the self-describing Names/ShapesData layer, writer, small data, runs, event building.
