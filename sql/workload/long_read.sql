-- A report reading allocations: its transaction stays open, holding ACCESS SHARE on the table.
SELECT count(*), max(upper(a."window")) FROM public.allocations AS a
