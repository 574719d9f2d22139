// Module kiln.dev/tests/testbox is a tiny static test program for the local clusters' real nodes.
module kiln.dev/tests/testbox

go 1.24.0
