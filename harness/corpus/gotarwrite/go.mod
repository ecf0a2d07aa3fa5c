module gotarwrite

go 1.22
