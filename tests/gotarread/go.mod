module gotarread

go 1.22
