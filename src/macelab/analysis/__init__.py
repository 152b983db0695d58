"""Analysis of runs: loading results into tables, and the plots researchers expect."""
