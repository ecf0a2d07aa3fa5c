module gotarvec

go 1.22
