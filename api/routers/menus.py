from api.models import Menu
from api.routers.crud import crud_router
from api.schemas import MenuIn, MenuUpdate

router = crud_router(Menu, MenuIn, MenuUpdate, "menus")
