"""The Supabase CLI's statement splitter, as `rollout.supabase` repeats it: a history row is
only "as the CLI writes it" when the statements are split as the CLI splits them. The cases
are the CLI's own behaviour (its pkg/parser): each list joined is the input, and must come
back exactly, piece by piece."""

from __future__ import annotations

import pytest

from rollout.supabase import split, split_statements

CASES = {
    "line comment after a separator": ["END;", "-- comment"],
    "line comment hides a separator": ["SELECT --; 1"],
    "a lone dash is no comment": ["- ;", "END"],
    "a line comment ends at the newline": ["-- /* \n;", " */ END"],
    "block comment hides a separator": ["SELECT /* ; */ 1;"],
    "nested block comments": ["SELECT /*; /*;*/ ;*/ 1"],
    "a slash and a star apart are no comment": ["/ * ;", " */ END"],
    "bare separators": [";", "END;", ";"],
    "spaces around a separator": ["BEGIN   ;", "  END"],
    "a backslash escapes a separator": ["\\;;", "\\;"],
    "a named dollar quote": ["$tag$ any ; string$tag$"],
    "an anonymous dollar quote": ['$$"Dane\'s horse"$$'],
    "a quoted dollar is no dollar quote": ['SELECT "$";', " $$"],
    "a single-quoted separator": ["SELECT ';' 1"],
    "a doubled single quote": ["SELECT ';'';' 1"],
    "a backslash in a string is literal": ["SELECT '\\';", " 1'"],
    "a double-quoted separator": ['CREATE POLICY "cats;dogs" on cats_dogs;', " END"],
    "a single quote inside an identifier": [
        "CREATE POLICY \"cat's and dog's\" on cats_dogs;",
        " END",
    ],
    "a doubled double quote": ['CREATE POLICY "pet""name" on pets;', " END"],
    "parentheses hide separators": [
        'CREATE RULE notify_me AS ON UPDATE TO mytable DO (NOTIFY mytable; SELECT "1");',
        "SELECT 1",
    ],
    "literals inside parentheses": [
        "CREATE RULE notify_me AS ON UPDATE TO mytable DO (-- )\nSELECT ')';\n-- )\n)\n"
    ],
    "a BEGIN ATOMIC body": [
        "CREATE FUNCTION add(a integer, b integer) RETURNS integer\nLANGUAGE SQL\n"
        "BEGIN ATOMIC\n\tSELECT 'add';\n\tSELECT a + b;\nEND;"
    ],
    "begin atomic in lower case": ["begin atomic; select 'end'; end"],
    "END in comments does not close a body": [
        "CREATE FUNCTION test() BEGIN\nATOMIC-- END;\n-- END;\nEND\n;"
    ],
    "atomic inside a table name": ["create table public.atomic_test (id int);", "\nselect 1;"],
    "atomic inside a function name": [
        "CREATE OR REPLACE FUNCTION public.my_function_atomic(p_id uuid)\nRETURNS void\n"
        "LANGUAGE plpgsql\nAS $$\nBEGIN\n  RAISE NOTICE 'hello';\nEND;\n$$;",
        "\nGRANT EXECUTE ON FUNCTION public.my_function_atomic(uuid) TO authenticated;",
    ],
    "atomic inside a column name": ["select is_atomic from flags;", "\nselect 1;"],
    "a digit before atomic": ["select col1atomic from t;", "\nselect 1;"],
}


@pytest.mark.parametrize("pieces", CASES.values(), ids=list(CASES))
def test_split_as_the_cli_does(pieces):
    assert split("".join(pieces)) == pieces


def test_trimmed_as_the_cli_stores_them():
    sql = "-- create it\nCREATE TABLE t (a int);\n\n  INSERT INTO t VALUES (1) ;;\n"
    assert split_statements(sql) == [
        "-- create it\nCREATE TABLE t (a int)",
        "INSERT INTO t VALUES (1)",
    ]
