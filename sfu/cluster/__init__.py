"""Scale-out: the coordination interface shared by the nodes and workers of a deployment
(``coordinator``), its in-memory implementation for one host and its Redis implementation for
a cluster of hosts."""
