module layerconf/mkfsshim

go 1.22
