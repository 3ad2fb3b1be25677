//! The fuzz targets' checks (`fuzz/`, `brook::fuzzing`) on fixed inputs:
//! tricky cases written by hand, and every input the fuzzers found, each
//! named for what it found.

use brook::fuzzing::{decode_lines, parse_script};

#[test]
fn statement_parser_edge_cases_keep_their_promises() {
    for sql in [
        "",
        ";",
        ";;;",
        "CREATE STREAM",
        "CREATE STREAM s (",
        "CREATE STREAM s (a INT) WITH (",
        "CREATE STREAM s WITH (connector = )",
        "CREATE SINK s WITH (a = 'b') AS",
        "CREATE SINK s WITH (a = 'b') AS SELECT",
        "STOP QUERY",
        "STOP QUERY 99999999999999999999999",
        "SET batch_interval = ",
        "SET batch_interval = '1e400 seconds'",
        "SET incremental_windows = maybe",
        "SELECT 'unterminated",
        "SELECT \"x",
        "SELECT 1; SELECT * FORM t;\n\nSELECT",
        "/* comment",
        "-- only a comment",
        "SELECT é FROM ü WHERE 'ß' = \n 'x' AND",
        "\n\n\n",
        "DROP SINK",
        "DROP STREAM IF",
    ] {
        parse_script(sql);
    }
}

#[test]
fn line_decoder_edge_cases_keep_their_promises() {
    let inputs: [&[u8]; 12] = [
        b"",
        b"\n",
        b"\n\n\n",
        b"a\nb",
        b"1,x,2.5\n2,y\n3,z,4,5\n,,\n\"q\nr\",1\n",
        b"\xff\xfe\n1,\xff,1\n",
        b"1,\"a,b\",3\n",
        b"\r\n\r\n1,a,1\r\n",
        b"NULL,NULL,NULL\n\\N,,null\n",
        b"1,aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa,1\n2,b,2\n",
        b"\"\n\"\n\"\n",
        b"1,a,1e999\n2,b,-0\n3,c,NaN\n",
    ];
    for input in inputs {
        for csv in [false, true] {
            for cut in [0, 1, 5] {
                for max_line_bytes in [16, 1 << 20] {
                    decode_lines(input, csv, cut, max_line_bytes);
                }
            }
        }
    }
}
